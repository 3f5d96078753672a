"""The handlers' own work: `training_status` answers with the JSON of job records, made once per record."""

from __future__ import annotations

import json

import pytest

from nulog.protocol import ProgressEvent
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.handlers import Handlers, LastEncoded, RecordJson
from training_controller.messages import JobRequest


def _record(job_id: str = "job-1", seq: int = 1) -> JobRecord:
    return JobRecord.new(job_id=job_id, seq=seq, requested_by="test", request={"model_to_train": "nulog", "ü": "ß"})


def test_record_json_is_the_record_as_the_store_keeps_it_in_strict_json():
    progress = ProgressEvent(epoch=1, epochs=3, step=2, steps=9, loss=float("nan"), percent=10.0, elapsed_s=1.5, eta_s=3.0)
    record = _record().advance(JobPhase.EXPORTING, "exporting").evolve(progress=progress)
    data = RecordJson()(record)
    assert data == record.model_dump_json().encode()
    # A diverged training's NaN loss is null, which any JSON parser reads (json.dumps would write NaN).
    parsed = json.loads(data, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    expected = record.to_json()
    expected["progress"]["loss"] = None
    assert parsed == expected


def test_record_json_is_made_again_for_a_changed_record():
    made = RecordJson()
    record = _record()
    assert made(record) is made(record)  # the same record: the same bytes, not made twice
    changed = record.advance(JobPhase.EXPORTING, "exporting logs")
    assert json.loads(made(changed))["phase"] == "exporting"
    assert json.loads(made(record))["phase"] == "queued"


def test_record_json_keeps_only_the_most_recently_made():
    made = RecordJson(size=2)
    first, second, third = (_record(f"job-{i}", seq=i) for i in range(3))
    kept = made(first)
    made(second)
    made(third)
    assert made(second) is made(second)
    assert made(first) is not kept  # it was dropped to make room, and made again
    assert json.loads(made(first)) == first.to_json()


def test_last_encoded_writes_a_value_once_and_a_replaced_value_again():
    made = LastEncoded()
    watchlist = {"cluster-1": {"shop": ["api"]}}
    first = made(watchlist)
    assert json.loads(first) == watchlist
    assert made(watchlist) is first  # the same object: the same bytes
    replaced = {"cluster-1": {"shop": ["api", "db"]}}
    assert json.loads(made(replaced)) == replaced
    assert json.loads(made({})) == {}


class _Controller:
    """The two questions training_status asks of the controller."""

    def __init__(self, record: JobRecord, position: int) -> None:
        self.record, self.position = record, position

    async def get_job(self, job_id: str) -> JobRecord:
        assert job_id == self.record.job_id
        return self.record

    async def queue_position(self, job_id: str) -> int:
        return self.position


async def test_training_status_reply_is_the_record_and_its_place_in_the_queue():
    controller = _Controller(_record(), position=3)
    handlers = Handlers(controller, instance="test")  # type: ignore[arg-type]
    reply = await handlers.training_status(JobRequest(job_id="job-1"), None)  # type: ignore[arg-type]
    assert json.loads(reply) == {**controller.record.to_json(), "queue_position": 3}
    controller.record = controller.record.advance(JobPhase.EXPORTING, "exporting logs")
    controller.position = 0
    reply = await handlers.training_status(JobRequest(job_id="job-1"), None)  # type: ignore[arg-type]
    assert json.loads(reply) == {**controller.record.to_json(), "queue_position": 0}
