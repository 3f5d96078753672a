"""The record index over records loaded as a store holds them (JSON bytes): what it answers is what it would
answer had every record been read in full, whichever it has read so far."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training_controller.core.jobs import JobPhase, JobRecord, WorkerInfo
from training_controller.core.records import RecordIndex

ENDS = (JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED)


def record(seq: int, phase: JobPhase, *, exported: int = 0, **changes: object) -> JobRecord:
    r = JobRecord.new(job_id=f"job-{seq:03d}", seq=seq, request_hash=f"{seq % 3:064x}", msg_id=f"m{seq}" if seq % 2 else None)
    for step in (JobPhase.EXPORTING, JobPhase.LAUNCHING, JobPhase.RUNNING):
        if r.phase is phase:
            break
        r = r.advance(step, step.value, **({"log_count": exported} if step is JobPhase.LAUNCHING and exported else {}))
    if phase.is_final:
        r = r.advance(phase, phase.value)
    if phase is JobPhase.RUNNING:
        r = r.evolve(gpu_held=True, trainer_may_run=True, workers=(WorkerInfo(index=0, role="master", name="pid 7", state="running"),))
    return r.evolve(**changes) if changes else r


def loaded(records: list[JobRecord]) -> RecordIndex:
    index = RecordIndex()
    for r in records:
        index.load(r.model_dump_json().encode())
    return index


def put(records: list[JobRecord]) -> RecordIndex:
    index = RecordIndex()
    for r in records:
        index.put(r)
    return index


def answers(index: RecordIndex) -> dict[str, object]:
    """Every question the index answers, as plain data. Asking reads records in full as it goes."""
    totals = index.totals()
    return {
        "all": [r.to_json() for r in index.all()],
        "owing": [r.job_id for r in index.owing()],
        "pending": [r.job_id for r in index.pending()],
        "next": getattr(index.next_to_run(), "job_id", None),
        "recent": [r.job_id for r in index.recent(limit=3)],
        "recent succeeded": [r.job_id for r in index.recent(limit=2, phase=JobPhase.SUCCEEDED, before_seq=9)],
        "copies": [r.job_id for r in index.copies(stream_seq=None, msg_id="m3", request_hash=f"{1:064x}")],
        "positions": {r.job_id: index.queue_position(r.job_id) for r in index.all()},
        "retention": index.beyond_retention(keep=2, older_than=None),
        "totals": (totals.by_phase, totals.documents, [r.job_id for r in totals.under_way], totals.latest_export_rate),
    }


phases = st.sampled_from(list(JobPhase))


@settings(max_examples=60, deadline=None)
@given(st.lists(phases, min_size=1, max_size=12), st.sets(st.integers(min_value=1, max_value=12)))
def test_an_index_of_loaded_records_answers_as_one_of_records_read_in_full(chosen: list[JobPhase], asked: set[int]) -> None:
    records = [record(i + 1, phase, exported=100 * (i + 1)) for i, phase in enumerate(chosen)]
    index = loaded(records)
    for seq in asked:  # some asked for already, and read
        index.get(f"job-{seq:03d}")

    assert answers(index) == answers(put(records))
    assert index.unread == 0


def test_ended_settled_records_are_read_when_asked_for_and_the_others_at_load() -> None:
    records = [
        record(1, JobPhase.SUCCEEDED),
        record(2, JobPhase.FAILED, gpu_held=True),  # ended, JobEnd still owed
        record(3, JobPhase.SUCCEEDED, announced=False),  # ended, model_ready still owed
        record(4, JobPhase.RUNNING),
        record(5, JobPhase.QUEUED),
        record(6, JobPhase.CANCELLED),
    ]
    records = [r.evolve(announced=True) if r.seq in (1,) else r for r in records]
    index = loaded(records)

    # Two records were loaded unread: the settled ended ones.
    assert index.unread == 2
    assert [r.job_id for r in index.owing()] == ["job-002", "job-003", "job-004", "job-005"]
    assert index.unread == 2  # owing() read nothing more
    assert index.get("job-001") == records[0]
    assert index.unread == 1
    index.put(records[5].evolve(message="replaced"))
    assert index.unread == 0 and index.get("job-006").message == "replaced"


def test_a_record_whose_rest_cannot_be_read_is_left_out_when_first_needed_and_said(caplog: pytest.LogCaptureFixture) -> None:
    good = record(1, JobPhase.SUCCEEDED, announced=True)
    stored = json.loads(record(2, JobPhase.FAILED).model_dump_json())
    stored["history"][0]["by"] = "a later version"  # an unknown field where this version reads none
    index = RecordIndex()
    index.load(good.model_dump_json().encode())
    index.load(json.dumps(stored).encode())
    assert len(index) == 2

    with caplog.at_level(logging.ERROR):
        listed = index.all()

    assert [r.job_id for r in listed] == ["job-001"]
    assert index.get("job-002") is None and len(index) == 1 and index.unread == 0
    assert index.totals().by_phase[JobPhase.FAILED] == 0
    assert "job record job-002 could not be read and is left out" in caplog.text


@pytest.mark.parametrize("raw", [b"not json", b"{}", json.dumps({"job_id": "x", "seq": "one", "phase": "queued"}).encode()])
def test_what_is_not_a_record_is_refused_at_load(raw: bytes) -> None:
    index = RecordIndex()
    with pytest.raises(ValueError):
        index.load(raw)
    assert len(index) == 0


def test_totals_follow_every_change_of_a_record() -> None:
    index = put([record(1, JobPhase.QUEUED)])
    assert index.totals().by_phase[JobPhase.QUEUED] == 1

    running = record(1, JobPhase.RUNNING, exported=500)
    index.put(running)
    totals = index.totals()
    assert totals.by_phase[JobPhase.QUEUED] == 0 and totals.by_phase[JobPhase.RUNNING] == 1
    assert totals.documents == 500 and [r.job_id for r in totals.under_way] == ["job-001"]

    index.remove("job-001")
    totals = index.totals()
    assert sum(totals.by_phase.values()) == 0 and totals.documents == 0 and totals.under_way == []
