"""The job runner and its error policy, on embedded adapters with a scripted launcher and recording events.

Temporary failures are retried and never fail a job that can still succeed; permanent ones fail it with
their reason; a bug fails the job, never the worker; every way out stops the trainer before JobEnd.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from nulog.protocol import LATEST_MODEL_FILE, LATEST_VOCAB_FILE, MODEL_FILE, VOCAB_FILE
from tests.unit.fakes import (
    LOGS,
    PROGRESS,
    SECOND,
    T0,
    FakeGpuService,
    FlakyState,
    RecordingEvents,
    ScriptedLauncher,
    write_logs,
)
from training_controller.adapters.logs.files import FilesLogSource
from training_controller.adapters.storage.local import LocalObjectStore
from training_controller.config import Settings, StoreSettings, TrainingSettings
from training_controller.core.controller import TrainingController
from training_controller.core.errors import JobNotFound, SourceUnavailable
from training_controller.core.export import InProcessExporter
from training_controller.core.gateway import TRAINING_STATUS_KEY
from training_controller.core.intake import Submission
from training_controller.core.jobs import Artifacts, JobPhase, JobRecord, TrainingData
from training_controller.core.masking import mask
from training_controller.core.ports import LogLine, TrainerOutput
from training_controller.core.queries import Interval, LogQuery


class Harness:
    """One controller on embedded adapters, and the doubles it talks to."""

    def __init__(self, tmp_path: Path, mode: str = "succeed", **training: Any) -> None:
        write_logs(tmp_path / "logs")
        self.store = LocalObjectStore(tmp_path / "store")
        self.state = FlakyState()
        self.events = RecordingEvents()
        self.launcher = ScriptedLauncher(mode)
        self.source = FilesLogSource(tmp_path / "logs")
        self.exporter = InProcessExporter(self.source, self.store)
        self.gpu_service = FakeGpuService()
        values = {"epochs": 2, "seed": 5, "max_lines": 1000, "device": "cpu", "progress_save_seconds": 0.0,
                  "retry_max_seconds": 0.05, **training}
        self.training = TrainingSettings(**values)
        self.catalogue = Settings(
            nats_server_url="nats://unused:4222", log_files_dir=tmp_path, local_store_dir=tmp_path,
            **{f"train_{k}": v for k, v in values.items() if k in ("epochs", "seed", "max_lines", "device")},
        ).catalogue()
        self.controller = self.new_controller()

    def new_controller(self) -> TrainingController:
        """A controller over the same state and backends, as after a restart."""
        return TrainingController(
            source=self.source,
            store=self.store,
            launcher=self.launcher,
            state=self.state,
            events=self.events,
            exporter=self.exporter,
            gpu_service=self.gpu_service,
            training=self.training,
            buckets=StoreSettings(),
            catalogue=self.catalogue,
        )

    async def submit(self, start: int = T0, end: int = T0 + 10 * 60 * SECOND) -> JobRecord:
        query = LogQuery(intervals=(Interval(start_ns=start, end_ns=end),))
        return (await self.controller.submit(Submission(query, request={"model_to_train": "nulog"}, requested_by="test"))).record

    async def run_one(self, **kw: Any) -> JobRecord:
        record = await self.submit(**kw)
        return await self.controller._runner.run_job(record)

    async def wait_until(self, job_id: str, predicate, timeout: float = 10) -> JobRecord:
        deadline = time.monotonic() + timeout
        while not predicate(record := await self.state.get_job(job_id)):
            assert time.monotonic() < deadline, f"job {job_id} is {record.phase.value}: {record.message}"
            await asyncio.sleep(0.01)
        return record


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


async def _stop(worker: asyncio.Task) -> None:
    worker.cancel()
    done, _ = await asyncio.wait({worker}, timeout=5)
    assert done == {worker}, "the worker did not stop when cancelled"


# -- the way through ----------------------------------------------------------------------------------------


async def test_successful_job_goes_through_every_phase_to_succeeded(harness: Harness):
    record = await harness.run_one()

    assert record.phase is JobPhase.SUCCEEDED
    assert [h.phase for h in record.history] == [
        JobPhase.QUEUED, JobPhase.EXPORTING, JobPhase.LAUNCHING, JobPhase.RUNNING, JobPhase.SUCCEEDED,
    ]
    assert await harness.state.get_job(record.job_id) == record
    assert not record.gpu_held and not record.trainer_may_run and record.announced
    status = await harness.state.get_value(TRAINING_STATUS_KEY)
    assert status == {
        "status": "completed",
        "statistics": {"timeElapsed": 2, "percentageCompleted": 100, "remainingTime": 0, "currentEpoch": 1,
                       "modelAccuracy": 0.0, "stage": "completed"},
    }


async def test_successful_job_announces_events_in_order(harness: Harness):
    record = await harness.run_one()

    assert harness.events.names() == [
        "job_start", "model_update", "job_progress", "job_progress", "job_progress", "job_progress",
        "model_ready", "job_end",
    ]
    assert harness.events.of("job_start") == [record.job_id]
    assert harness.events.of("model_update") == ["training"]
    relayed = [u for _, u in harness.events.of("job_progress") if isinstance(u, TrainerOutput | LogLine)]
    assert relayed[1:] == [TrainerOutput(PROGRESS[0]), TrainerOutput(PROGRESS[1]), LogLine("epoch done")]
    assert harness.events.of("model_ready") == [{
        "bucket": "opni-nulog-models", "model_file": LATEST_MODEL_FILE, "vocab_file": LATEST_VOCAB_FILE,
        "job_id": record.job_id,
    }]
    assert harness.events.of("job_end") == [record.job_id]
    assert harness.events.phases() == ["exporting", "launching", "running", "succeeded"]


async def test_successful_job_publishes_latest_files_with_identical_bytes(harness: Harness):
    record = await harness.run_one()

    archive, models = "opni-nulog-models-archive", "opni-nulog-models"
    model = await harness.store.get_bytes(archive, f"{record.job_id}/{MODEL_FILE}")
    assert model == harness.launcher.model_bytes[record.job_id]
    assert await harness.store.get_bytes(models, LATEST_MODEL_FILE) == model
    assert await harness.store.get_bytes(models, LATEST_VOCAB_FILE) == await harness.store.get_bytes(
        archive, f"{record.job_id}/{VOCAB_FILE}"
    )
    assert await harness.store.list(models) == [LATEST_MODEL_FILE, LATEST_VOCAB_FILE]  # nothing else to wipe
    assert record.artifacts == Artifacts(
        bucket=archive,
        model=f"{record.job_id}/{MODEL_FILE}",
        vocab=f"{record.job_id}/{VOCAB_FILE}",
        metrics=f"{record.job_id}/metrics.json",
        latest_bucket=models,
        latest_model=LATEST_MODEL_FILE,
        latest_vocab=LATEST_VOCAB_FILE,
    )


async def test_successful_job_records_count_data_hash_and_progress(harness: Harness):
    record = await harness.run_one()

    data_key = f"{record.job_id}/windows.jsonl.gz"
    data = await harness.store.get_bytes("training-logs", data_key)
    assert record.log_count == len(LOGS)
    assert record.train_data_version_hash == hashlib.sha256(data).hexdigest()
    assert record.training_data == TrainingData(
        bucket="training-logs", data=data_key, manifest=f"{record.job_id}/manifest.json"
    )
    manifest = json.loads(await harness.store.get_bytes("training-logs", f"{record.job_id}/manifest.json"))
    assert manifest["count"] == len(LOGS) and manifest["sha256"] == record.train_data_version_hash
    assert record.progress == PROGRESS[-1]


async def test_record_keeps_the_latest_progress_report_when_saves_are_throttled(tmp_path: Path):
    harness = Harness(tmp_path, progress_save_seconds=60.0)

    record = await harness.run_one()

    assert record.phase is JobPhase.SUCCEEDED
    assert record.progress == PROGRESS[-1]


async def test_launcher_gets_the_trainer_arguments_of_the_job(harness: Harness):
    record = await harness.run_one()

    [spec] = harness.launcher.specs
    assert spec.job_id == record.job_id
    assert spec.args.data == (harness.store.uri("training-logs", f"{record.job_id}/windows.jsonl.gz"),)
    assert spec.args.output == harness.store.uri("opni-nulog-models-archive", record.job_id)
    assert (spec.args.epochs, spec.args.seed, spec.args.max_lines, spec.args.device) == (2, 5, 1000, "cpu")
    assert record.parameters == {
        "workers": 1, "epochs": 2, "batch_size": None, "seed": 5, "max_lines": 1000, "k": None, "device": "cpu",
        "model_format": "nulog",
    }
    assert spec.args.model_format == "nulog"
    assert spec.args.checkpoint == harness.store.uri("opni-nulog-models-archive", f"{record.job_id}/checkpoint")
    assert record.window_seconds == 60


async def test_exported_windows_hold_masked_lines_grouped_by_window(harness: Harness):
    record = await harness.run_one()

    raw = await harness.store.get_bytes("training-logs", f"{record.job_id}/windows.jsonl.gz")
    windows = [json.loads(line) for line in gzip.decompress(raw).decode().splitlines()]

    minute = 60 * SECOND
    assert [(w["start_ts"], w["end_ts"]) for w in windows] == [
        (T0, T0 + minute), (T0 + minute, T0 + 2 * minute), (T0 + 2 * minute, T0 + 3 * minute),
    ]
    assert [w["logs"] for w in windows] == [
        [mask(LOGS[0][1]), mask(LOGS[1][1])],
        [mask(LOGS[2][1]), mask(LOGS[3][1])],
        [mask(LOGS[4][1])],
    ]
    assert [w["count"] for w in windows] == [len(w["logs"]) for w in windows]


# -- failures of the job --------------------------------------------------------------------------------------


async def test_failing_trainer_fails_the_job_with_its_message_and_still_ends_it(tmp_path: Path):
    harness = Harness(tmp_path, mode="fail")

    record = await harness.run_one()

    assert record.phase is JobPhase.FAILED
    assert "out of memory" in record.message
    assert record.finished_at is not None and not record.gpu_held
    names = harness.events.names()
    assert names[0] == "job_start" and names[-1] == "job_end"
    assert "model_ready" not in names
    assert not await harness.store.exists("opni-nulog-models", LATEST_MODEL_FILE)
    assert (await harness.state.get_value(TRAINING_STATUS_KEY))["status"] == "training failed"


async def test_trainer_that_succeeds_without_a_model_fails_the_job(tmp_path: Path):
    harness = Harness(tmp_path, mode="no-model")

    record = await harness.run_one()

    assert record.phase is JobPhase.FAILED
    assert "nulog_model.pt" in record.message
    assert harness.events.of("job_end") == [record.job_id]
    assert "model_ready" not in harness.events.names()


async def test_query_without_matching_logs_fails_before_the_gpu_is_announced(harness: Harness):
    record = await harness.run_one(start=T0 - 3600 * SECOND, end=T0 - 60 * SECOND)

    assert record.phase is JobPhase.FAILED
    assert "no log documents" in record.message
    assert [h.phase for h in record.history] == [JobPhase.QUEUED, JobPhase.EXPORTING, JobPhase.FAILED]
    names = harness.events.names()
    assert "job_start" not in names and "job_end" not in names
    assert harness.launcher.specs == []


# -- the error policy ----------------------------------------------------------------------------------------


async def test_state_writes_that_fail_for_a_while_are_retried_and_the_job_succeeds(harness: Harness):
    record = await harness.submit()
    harness.state.fail_next = 25  # every write for a while: phase changes, GPU claim, progress, status

    record = await harness.controller._runner.run_job(record)

    assert harness.state.failures == 25
    assert record.phase is JobPhase.SUCCEEDED, record.message
    assert harness.events.of("model_ready") and harness.events.names()[-1] == "job_end"


async def test_state_store_down_while_the_trainer_finishes_never_turns_success_into_failure(harness: Harness):
    record = await harness.submit()
    harness.state.down = True  # NATS away from before the export to after the trainer ended
    runner = asyncio.create_task(harness.controller._runner.run_job(record))
    await asyncio.sleep(0.3)
    assert not runner.done()
    harness.state.down = False

    record = await asyncio.wait_for(runner, 10)

    assert record.phase is JobPhase.SUCCEEDED, record.message
    assert harness.events.of("model_ready")[0]["job_id"] == record.job_id
    assert harness.events.names().count("job_end") == 1


async def test_a_follow_broken_off_by_a_temporary_error_is_resumed(harness: Harness):
    harness.launcher.follow_failures = 2

    record = await harness.run_one()

    assert record.phase is JobPhase.SUCCEEDED, record.message
    assert len(harness.launcher.specs) == 1  # followed again, not launched again


class FailingExporter:
    """An export whose backend never answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def export(self, query: LogQuery, **kw: Any):
        self.calls += 1
        raise SourceUnavailable("Elasticsearch answered 503", delay=0.01)


async def test_a_temporary_failure_that_outlasts_the_deadline_fails_the_job_with_its_reason(tmp_path: Path):
    harness = Harness(tmp_path, job_deadline_seconds=0.5)
    harness.exporter = FailingExporter()
    harness.controller = harness.new_controller()

    record = await harness.run_one()

    assert record.phase is JobPhase.FAILED
    assert "exporting kept failing until the job's deadline" in record.message
    assert "Elasticsearch answered 503" in record.message
    assert harness.exporter.calls > 3


class BuggyExporter:
    async def export(self, query: LogQuery, **kw: Any):
        raise KeyError("a bug")


async def test_a_bug_fails_the_job_and_the_worker_goes_on_with_the_next(tmp_path: Path):
    harness = Harness(tmp_path)
    good = harness.exporter
    harness.exporter = BuggyExporter()
    harness.controller = harness.new_controller()
    first = await harness.submit()
    worker = asyncio.create_task(harness.controller.run())
    try:
        failed = await harness.wait_until(first.job_id, lambda r: r.phase.is_final)
        harness.controller._runner._c.exporter = good
        second = await harness.submit()
        done = await harness.wait_until(second.job_id, lambda r: r.phase.is_final)
    finally:
        await _stop(worker)

    assert failed.phase is JobPhase.FAILED and failed.message == "internal error: KeyError: 'a bug'"
    assert done.phase is JobPhase.SUCCEEDED


# -- cancelling ----------------------------------------------------------------------------------------------


async def test_cancelling_a_running_job_stops_its_trainer_before_job_end(tmp_path: Path):
    harness = Harness(tmp_path, mode="hang")
    record = await harness.submit()
    worker = asyncio.create_task(harness.controller.run())
    try:
        await harness.wait_until(record.job_id, lambda r: r.phase is JobPhase.RUNNING)
        answer = await harness.controller.cancel(record.job_id)
        assert answer.cancel_requested and not answer.phase.is_final
        ended = await harness.wait_until(record.job_id, lambda r: r.phase.is_final and not r.gpu_held)
    finally:
        await _stop(worker)

    assert ended.phase is JobPhase.CANCELLED
    assert harness.launcher.cancelled == [record.job_id]
    assert harness.launcher.running == set()
    assert harness.events.names()[-1] == "job_end"
    assert "model_ready" not in harness.events.names()


async def test_cancelling_a_queued_job_ends_it_at_once_without_the_gpu(harness: Harness):
    record = await harness.submit()

    answer = await harness.controller.cancel(record.job_id)

    assert answer.phase is JobPhase.CANCELLED and answer.message == "cancelled while queued"
    assert harness.events.names() == []


# -- restarts ------------------------------------------------------------------------------------------------


async def test_a_restarted_controller_holds_the_gpu_of_a_running_job_until_it_ends(tmp_path: Path):
    harness = Harness(tmp_path, mode="hang")
    record = await harness.submit()
    worker = asyncio.create_task(harness.controller.run())
    await harness.wait_until(record.job_id, lambda r: r.phase is JobPhase.RUNNING)
    await _stop(worker)  # the controller dies; its trainer runs on

    restarted = harness.new_controller()
    await restarted.load()
    assert restarted.gpu_free_for_inference() is False
    assert await restarted.grant_inference(b"batch") is False
    worker = asyncio.create_task(restarted.run())
    try:
        await asyncio.sleep(0.1)
        assert await restarted.grant_inference(b"batch") is False
        await harness.launcher.cancel(record.job_id)  # the trainer ends
        ended = await harness.wait_until(record.job_id, lambda r: r.phase.is_final and not r.gpu_held)
    finally:
        await _stop(worker)

    assert ended.phase is JobPhase.FAILED
    assert restarted.gpu_free_for_inference() is True
    assert harness.events.of("job_start") == [record.job_id]
    assert harness.events.of("job_end") == [record.job_id]


async def test_a_job_that_ended_unsettled_is_settled_when_the_worker_starts(harness: Harness):
    record = await harness.submit()
    ended = record.advance(JobPhase.EXPORTING, "x").advance(JobPhase.FAILED, "the controller died")
    await harness.state.save_job(ended.evolve(gpu_held=True, trainer_may_run=True))

    restarted = harness.new_controller()
    await restarted.load()
    assert restarted.gpu_free_for_inference() is False
    worker = asyncio.create_task(restarted.run())
    try:
        await harness.wait_until(record.job_id, lambda r: not r.gpu_held)
    finally:
        await _stop(worker)

    assert harness.launcher.cancelled == [record.job_id]
    assert harness.events.names() == ["job_end"]
    assert restarted.gpu_free_for_inference() is True


# -- the queue -----------------------------------------------------------------------------------------------


async def test_worker_runs_jobs_in_submission_order(harness: Harness):
    first = await harness.submit()
    second = await harness.submit(start=T0 + 60 * SECOND)

    worker = asyncio.create_task(harness.controller.run())
    try:
        records = [await harness.wait_until(r.job_id, lambda r: r.phase.is_final) for r in (first, second)]
    finally:
        await _stop(worker)

    assert [r.phase for r in records] == [JobPhase.SUCCEEDED, JobPhase.SUCCEEDED]
    assert [s.job_id for s in harness.launcher.specs] == [first.job_id, second.job_id]
    names = harness.events.names()
    assert names.index("job_end") < len(names) - 1 - names[::-1].index("job_start")  # no overlap on the GPU
    assert records[1].log_count == 3  # the second job only saw its own interval


async def test_queue_position_counts_jobs_ahead(harness: Harness):
    a, b, c = [await harness.submit() for _ in range(3)]
    positions = harness.controller.queue_position

    assert [await positions(r.job_id) for r in (a, b, c)] == [0, 1, 2]
    await harness.state.save_job(a.advance(JobPhase.EXPORTING, "exporting logs"))  # a now runs
    assert [await positions(r.job_id) for r in (a, b, c)] == [0, 1, 2]
    await harness.state.save_job((await harness.state.get_job(a.job_id)).advance(JobPhase.FAILED, "x"))
    assert [await positions(r.job_id) for r in (b, c)] == [0, 1]
    assert await positions("unknown") == 0


async def test_submit_applies_the_max_documents_setting(tmp_path: Path):
    harness = Harness(tmp_path, max_documents=2)

    record = await harness.run_one()

    assert record.query is not None and record.query.max_documents == 2
    assert record.log_count == 2


async def test_get_job_and_list_jobs(harness: Harness):
    a = await harness.submit()
    b = await harness.run_one()

    assert await harness.controller.get_job(a.job_id) == a
    with pytest.raises(JobNotFound, match="no training job with id 'nope'"):
        await harness.controller.get_job("nope")
    assert [r.job_id for r in await harness.controller.list_jobs()] == [b.job_id, a.job_id]
    assert [r.job_id for r in await harness.controller.list_jobs(phase=JobPhase.QUEUED)] == [a.job_id]
    assert [r.job_id for r in await harness.controller.list_jobs(limit=1)] == [b.job_id]
