"""The job record: the lifecycle it allows, its history and timestamps, immutability and its JSON form."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from nulog.protocol import ProgressEvent
from training_controller.core.errors import IllegalTransition, PermanentError
from training_controller.core.jobs import FINAL_PHASES, Artifacts, JobPhase, JobRecord

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
NON_FINAL = [p for p in JobPhase if p not in FINAL_PHASES]
LEGAL_PATH = [
    (JobPhase.EXPORTING, "exporting logs"),
    (JobPhase.LAUNCHING, "launching"),
    (JobPhase.RUNNING, "training"),
    (JobPhase.SUCCEEDED, "model trained"),
]


def _record(job_id: str = "job-1") -> JobRecord:
    return JobRecord.new(job_id=job_id, seq=1, requested_by="test")


def _record_in(phase: JobPhase) -> JobRecord:
    """A record walked along the legal path up to `phase` (which must be on it or queued)."""
    record = _record()
    for step, message in LEGAL_PATH:
        if record.phase is phase:
            break
        record = record.advance(step, message)
    assert record.phase is phase
    return record


def test_new_record_is_queued_with_one_history_entry():
    record = _record()

    assert record.phase is JobPhase.QUEUED
    assert [h.phase for h in record.history] == [JobPhase.QUEUED]
    assert record.created_at == record.updated_at == record.history[0].at
    assert ISO_UTC.match(record.created_at)
    assert record.started_at is None and record.finished_at is None


def test_legal_path_reaches_succeeded_with_full_history_and_timestamps():
    record = _record()
    for phase, message in LEGAL_PATH:
        record = record.advance(phase, message)

    assert record.phase is JobPhase.SUCCEEDED
    assert record.message == "model trained"
    assert [h.phase for h in record.history] == [JobPhase.QUEUED] + [p for p, _ in LEGAL_PATH]
    assert [h.message for h in record.history][1:] == [m for _, m in LEGAL_PATH]
    assert record.started_at == record.history[1].at  # set when exporting begins
    assert record.finished_at == record.history[-1].at
    for stamp in (record.started_at, record.finished_at, record.updated_at, *(h.at for h in record.history)):
        assert ISO_UTC.match(stamp), stamp
    assert record.started_at <= record.finished_at


def test_started_at_is_kept_once_set():
    exporting = _record().advance(JobPhase.EXPORTING, "exporting")
    running = exporting.advance(JobPhase.LAUNCHING, "launching").advance(JobPhase.RUNNING, "training")

    assert running.started_at == exporting.started_at
    assert running.finished_at is None


@pytest.mark.parametrize("final", [JobPhase.FAILED, JobPhase.CANCELLED])
@pytest.mark.parametrize("start", NON_FINAL)
def test_failed_and_cancelled_are_reachable_from_every_non_final_phase(start: JobPhase, final: JobPhase):
    record = _record_in(start)

    ended = record.advance(final, "stopped")

    assert ended.phase is final
    assert ended.finished_at is not None and ISO_UTC.match(ended.finished_at)
    assert ended.history[-1].phase is final


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (JobPhase.QUEUED, JobPhase.RUNNING),
        (JobPhase.QUEUED, JobPhase.SUCCEEDED),
        (JobPhase.EXPORTING, JobPhase.QUEUED),
        (JobPhase.RUNNING, JobPhase.LAUNCHING),
        (JobPhase.RUNNING, JobPhase.RUNNING),
    ],
)
def test_step_outside_the_lifecycle_raises_illegal_transition_naming_job_and_phases(start, target):
    record = _record_in(start)

    with pytest.raises(IllegalTransition) as info:
        record.advance(target, "nope")

    message = str(info.value)
    assert message == (
        f"job job-1 cannot move from {start.value} to {target.value}: that step is not in the lifecycle."
    )
    assert isinstance(info.value, PermanentError)


@pytest.mark.parametrize("final", sorted(FINAL_PHASES))
@pytest.mark.parametrize("target", [JobPhase.FAILED, JobPhase.CANCELLED, JobPhase.QUEUED, JobPhase.SUCCEEDED])
def test_a_final_record_cannot_move_anywhere(final: JobPhase, target: JobPhase):
    record = _record_in(JobPhase.RUNNING) if final is JobPhase.SUCCEEDED else _record()
    record = record.advance(final, "ended")

    with pytest.raises(IllegalTransition, match=rf"^job job-1 cannot move from {final.value} to {target.value}: "
                       r"it has already ended\.$"):
        record.advance(target, "again")


def test_succeeded_to_failed_is_illegal():
    done = _record_in(JobPhase.RUNNING).advance(JobPhase.SUCCEEDED, "done")

    assert not done.can_move_to(JobPhase.FAILED)
    with pytest.raises(IllegalTransition, match="job job-1 cannot move from succeeded to failed"):
        done.advance(JobPhase.FAILED, "late failure")


def test_record_is_immutable():
    record = _record()

    with pytest.raises(ValidationError):
        record.phase = JobPhase.RUNNING  # type: ignore[misc]
    with pytest.raises(ValidationError):
        record.message = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        record.history[0].phase = JobPhase.FAILED  # type: ignore[misc]
    assert record.phase is JobPhase.QUEUED


def test_advance_returns_a_new_record_and_leaves_the_old_one_unchanged():
    old = _record()
    before = old.to_json()

    new = old.advance(JobPhase.EXPORTING, "exporting logs", log_count=7)

    assert new is not old
    assert new.phase is JobPhase.EXPORTING and new.log_count == 7
    assert old.to_json() == before
    assert old.phase is JobPhase.QUEUED and old.log_count is None and len(old.history) == 1


PROGRESS = ProgressEvent(epoch=1, epochs=2, step=5, steps=10, loss=0.5, percent=50, elapsed_s=3, eta_s=3)


def test_evolve_changes_data_and_keeps_the_phase():
    old = _record_in(JobPhase.RUNNING)

    new = old.evolve(progress=PROGRESS)

    assert new.phase is JobPhase.RUNNING
    assert new.progress == PROGRESS
    assert new.history == old.history
    assert old.progress is None


def test_evolve_refuses_a_misspelt_field():
    record = _record()

    with pytest.raises(TypeError, match="a job record has no field gpu_hed"):
        record.evolve(gpu_hed=True)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"log_count": "lots"}, "log_count"), ({"gpu_held": "maybe"}, "gpu_held"), ({"progress": {"percent": 50}}, "progress")],
)
def test_evolve_refuses_a_value_of_the_wrong_type(change: dict, field: str):
    record = _record()

    with pytest.raises(TypeError, match=f"invalid change to job job-1: .*{field}"):
        record.evolve(**change)


def test_advance_validates_its_changes_too():
    with pytest.raises(TypeError, match="log_count"):
        _record().advance(JobPhase.EXPORTING, "exporting", log_count=-1)


def test_evolve_refuses_a_phase_change():
    record = _record()

    with pytest.raises(ValueError, match="advance"):
        record.evolve(phase=JobPhase.SUCCEEDED)
    assert record.phase is JobPhase.QUEUED


def test_to_json_round_trips_through_model_validate():
    artifacts = Artifacts(
        bucket="b", model="j/m.pt", vocab="j/v.txt", metrics="j/m.json", latest_model="m.pt", latest_vocab="v.txt"
    )
    record = _record_in(JobPhase.RUNNING).evolve(progress=PROGRESS, artifacts=artifacts, log_count=3)

    data = record.to_json()

    assert data["phase"] == "running"
    assert isinstance(data["history"], list) and data["history"][0]["phase"] == "queued"
    assert JobRecord.model_validate(data) == record
    assert JobRecord.model_validate_json(json.dumps(data)) == record


def test_a_record_stored_before_its_contents_were_typed_still_loads():
    data = _record().to_json() | {"progress": {}, "artifacts": {}, "training_data": {}}

    record = JobRecord.model_validate(data)

    assert record.progress is None and record.artifacts is None and record.training_data is None


def test_phase_flags():
    assert {p for p in JobPhase if p.is_final} == {JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED}
