"""The controller's use cases on embedded adapters, with a scripted launcher and a recording Events double."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from training_controller.adapters.logs.files import FilesLogSource
from training_controller.adapters.state.memory import MemoryStateStore
from training_controller.adapters.storage.local import LocalObjectStore
from training_controller.core.controller import (
    LATEST_MODEL_FILE,
    LATEST_VOCAB_FILE,
    MODEL_FILE,
    TRAINING_STATUS_KEY,
    VOCAB_FILE,
    ControllerOptions,
    TrainingController,
)
from training_controller.core.errors import JobNotFound
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.masking import mask
from training_controller.core.ports import Events, JobSpec, LaunchedJob, Launcher, LauncherEvent
from training_controller.core.queries import Interval, LogQuery

SECOND = 1_000_000_000
T0 = 1_617_038_400 * SECOND  # 2021-03-29 17:20:00 UTC, on a minute boundary
PROGRESS = [
    {"event": "progress", "epoch": 1, "epochs": 1, "step": 1, "steps": 2, "loss": 0.5, "percent": 50,
     "elapsed_s": 1, "eta_s": 1},
    {"event": "progress", "epoch": 1, "epochs": 1, "step": 2, "steps": 2, "loss": 0.2, "percent": 100,
     "elapsed_s": 2, "eta_s": 0},
]
LOGS = [
    (T0 + 1 * SECOND, "GET /api 200 from 10.0.0.1 took 3.1ms"),
    (T0 + 2 * SECOND, "user 42 logged in"),
    (T0 + 61 * SECOND, "request 123e4567-e89b-12d3-a456-426614174000 done"),
    (T0 + 62 * SECOND, "cache hit ratio 0.75"),
    (T0 + 125 * SECOND, "worker started"),
]


class RecordingEvents(Events):
    """Appends (name, args) for every announcement, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def job_start(self, job_id: str) -> None:
        self.calls.append(("job_start", job_id))

    async def job_end(self, job_id: str) -> None:
        self.calls.append(("job_end", job_id))

    async def model_ready(self, *, bucket: str, model_file: str, vocab_file: str, job_id: str) -> None:
        self.calls.append(("model_ready", {"bucket": bucket, "model_file": model_file, "vocab_file": vocab_file,
                                           "job_id": job_id}))

    async def model_update(self, status: str) -> None:
        self.calls.append(("model_update", status))

    async def job_progress(self, job_id: str, data: dict[str, Any]) -> None:
        self.calls.append(("job_progress", (job_id, data)))

    async def workload_parameters(self, workloads: dict[str, Any], status_type: str) -> None:
        self.calls.append(("workload_parameters", (workloads, status_type)))

    async def inference_granted(self, payload: bytes) -> None:
        self.calls.append(("inference_granted", payload))

    def names(self, *, phases: bool = False) -> list[str]:
        """Names of the calls, leaving out phase reports unless asked."""
        return [
            name for name, args in self.calls
            if phases or not (name == "job_progress" and args[1].get("kind") == "phase")
        ]

    def of(self, name: str) -> list[Any]:
        return [args for n, args in self.calls if n == name]


class ScriptedLauncher(Launcher):
    """Does what `mode` says: `succeed` writes the model files, `no-model` writes nothing, `fail` reports an error."""

    name = "scripted"

    def __init__(self, mode: str = "succeed") -> None:
        self.mode = mode
        self.specs: list[JobSpec] = []
        self.model_bytes: dict[str, bytes] = {}

    async def launch(self, spec: JobSpec) -> None:
        self.specs.append(spec)
        if self.mode == "succeed":
            self.model_bytes[spec.job_id] = f"weights of {spec.job_id}".encode() + bytes(range(256))
            await asyncio.to_thread(self._write_model, spec)

    def _write_model(self, spec: JobSpec) -> None:
        out = Path(spec.output_uri)
        out.mkdir(parents=True, exist_ok=True)
        (out / MODEL_FILE).write_bytes(self.model_bytes[spec.job_id])
        (out / VOCAB_FILE).write_text(f"<PAD>\n<UNK>\nvocab-of-{spec.job_id}\n")

    async def events(self, job_id: str) -> AsyncIterator[LauncherEvent]:
        for data in PROGRESS:
            await asyncio.sleep(0)
            yield LauncherEvent("progress", dict(data))
        yield LauncherEvent("log", {"line": "epoch done"})
        if self.mode == "fail":
            yield LauncherEvent("finished", succeeded=False, message="exit code 1: out of memory")
        else:
            yield LauncherEvent("finished", succeeded=True, message="exit code 0")

    async def cancel(self, job_id: str) -> None:
        pass

    async def list_jobs(self) -> list[LaunchedJob]:
        return [LaunchedJob(spec.job_id, "succeeded") for spec in self.specs]


def _write_logs(directory: Path, logs: list[tuple[int, str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "app.jsonl").open("w") as f:
        for ts, line in reversed(logs):  # out of order on disk: the source sorts
            f.write(json.dumps({"timestamp": ts, "log": line, "deployment": "web", "namespace_name": "shop",
                                "cluster_id": "c1"}) + "\n")


class Harness:
    """One controller on embedded adapters, and the doubles it talks to."""

    def __init__(self, tmp_path: Path, mode: str = "succeed", *, progress_save_seconds: float = 0.0) -> None:
        _write_logs(tmp_path / "logs", LOGS)
        self.store = LocalObjectStore(tmp_path / "store")
        self.state = MemoryStateStore()
        self.events = RecordingEvents()
        self.launcher = ScriptedLauncher(mode)
        self.options = ControllerOptions(
            window_seconds=60, epochs=2, seed=5, max_lines=1000, device="cpu", progress_save_seconds=progress_save_seconds
        )
        self.controller = TrainingController(
            source=FilesLogSource(tmp_path / "logs"),
            store=self.store,
            launcher=self.launcher,
            state=self.state,
            events=self.events,
            options=self.options,
        )

    async def submit(self, start: int = T0, end: int = T0 + 10 * 60 * SECOND) -> JobRecord:
        query = LogQuery(intervals=(Interval(start_ns=start, end_ns=end),))
        return await self.controller.submit(query, request={"model_to_train": "nulog"}, requested_by="test")

    async def run_one(self, **kw: Any) -> JobRecord:
        record = await self.submit(**kw)
        return await self.controller.run_job(record)


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


async def test_successful_job_goes_through_every_phase_to_succeeded(harness: Harness):
    record = await harness.run_one()

    assert record.phase is JobPhase.SUCCEEDED
    assert [h.phase for h in record.history] == [
        JobPhase.QUEUED, JobPhase.EXPORTING, JobPhase.LAUNCHING, JobPhase.RUNNING, JobPhase.SUCCEEDED,
    ]
    assert await harness.state.get_job(record.job_id) == record
    assert record.started_at is not None and record.finished_at is not None
    status = await harness.state.get_value(TRAINING_STATUS_KEY)
    assert status["job_id"] == record.job_id and status["status"] == "completed"
    assert status["statistics"]["percentageCompleted"] == 100


async def test_successful_job_announces_events_in_order(harness: Harness):
    record = await harness.run_one()

    assert harness.events.names() == [
        "job_start", "model_update", "job_progress", "job_progress", "job_progress", "model_ready", "job_end",
    ]
    assert harness.events.of("job_start") == [record.job_id]
    assert harness.events.of("model_update") == ["training"]
    relayed = [data for job_id, data in harness.events.of("job_progress") if data["kind"] != "phase"]
    assert relayed == [{"kind": "progress", **PROGRESS[0]}, {"kind": "progress", **PROGRESS[1]},
                       {"kind": "log", "line": "epoch done"}]
    assert harness.events.of("model_ready") == [{
        "bucket": "opni-nulog-models", "model_file": LATEST_MODEL_FILE, "vocab_file": LATEST_VOCAB_FILE,
        "job_id": record.job_id,
    }]
    assert harness.events.of("job_end") == [record.job_id]
    phases = [data["phase"] for _, data in harness.events.of("job_progress") if data["kind"] == "phase"]
    assert phases == ["exporting", "launching", "running", "succeeded"]


async def test_successful_job_publishes_latest_files_with_identical_bytes(harness: Harness):
    record = await harness.run_one()

    bucket = "opni-nulog-models"
    model = await harness.store.get_bytes(bucket, f"{record.job_id}/{MODEL_FILE}")
    assert model == harness.launcher.model_bytes[record.job_id]
    assert await harness.store.get_bytes(bucket, LATEST_MODEL_FILE) == model
    assert await harness.store.get_bytes(bucket, LATEST_VOCAB_FILE) == await harness.store.get_bytes(
        bucket, f"{record.job_id}/{VOCAB_FILE}"
    )
    assert record.artifacts == {
        "bucket": bucket,
        "model": f"{record.job_id}/{MODEL_FILE}",
        "vocab": f"{record.job_id}/{VOCAB_FILE}",
        "metrics": f"{record.job_id}/metrics.json",
        "latest_model": LATEST_MODEL_FILE,
        "latest_vocab": LATEST_VOCAB_FILE,
    }


async def test_successful_job_records_count_data_hash_and_progress(harness: Harness):
    record = await harness.run_one()

    data_key = f"{record.job_id}/windows.jsonl.gz"
    data = await harness.store.get_bytes("training-logs", data_key)
    assert record.log_count == len(LOGS)
    assert record.train_data_version_hash == hashlib.sha256(data).hexdigest()
    assert record.training_data == {
        "bucket": "training-logs", "data": data_key, "manifest": f"{record.job_id}/manifest.json",
    }
    manifest = json.loads(await harness.store.get_bytes("training-logs", f"{record.job_id}/manifest.json"))
    assert manifest["count"] == len(LOGS) and manifest["sha256"] == record.train_data_version_hash
    assert record.progress == PROGRESS[-1]


async def test_record_keeps_the_latest_progress_report_when_saves_are_throttled(tmp_path: Path):
    harness = Harness(tmp_path, progress_save_seconds=60.0)

    record = await harness.run_one()

    assert record.phase is JobPhase.SUCCEEDED
    assert record.progress == PROGRESS[-1]


async def _stop(worker: asyncio.Task) -> None:
    await asyncio.sleep(0.05)  # let the worker go back to waiting: see the xfail test of a cancel as a job ends
    worker.cancel()
    done, _ = await asyncio.wait({worker}, timeout=5)
    assert done == {worker}, "the worker did not stop when cancelled"
    assert worker.cancelled()


async def test_launcher_gets_a_spec_built_from_the_options_and_the_store(harness: Harness):
    record = await harness.run_one()

    [spec] = harness.launcher.specs
    assert spec.job_id == record.job_id
    assert spec.data_uris == (harness.store.uri("training-logs", f"{record.job_id}/windows.jsonl.gz"),)
    assert spec.output_uri == harness.store.uri("opni-nulog-models", record.job_id)
    assert (spec.epochs, spec.seed, spec.max_lines, spec.device) == (2, 5, 1000, "cpu")
    assert record.parameters == {"epochs": 2, "seed": 5, "max_lines": 1000, "device": "cpu", "window_seconds": 60}


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
    assert windows[0]["logs"][0] == "GET /api <NUM> from <IP> took <DURATION>"
    assert [w["count"] for w in windows] == [len(w["logs"]) for w in windows]
    assert sum(w["count"] for w in windows) == record.log_count


async def test_failing_launcher_fails_the_job_with_its_message_and_still_ends_it(tmp_path: Path):
    harness = Harness(tmp_path, mode="fail")

    record = await harness.run_one()

    assert record.phase is JobPhase.FAILED
    assert "out of memory" in record.message
    assert record.finished_at is not None
    assert (await harness.state.get_job(record.job_id)).phase is JobPhase.FAILED
    names = harness.events.names()
    assert names[0] == "job_start" and names[-1] == "job_end"
    assert "model_ready" not in names
    assert not await harness.store.exists("opni-nulog-models", LATEST_MODEL_FILE)
    assert (await harness.state.get_value(TRAINING_STATUS_KEY))["status"] == "failed"


async def test_launcher_that_succeeds_without_a_model_fails_the_job(tmp_path: Path):
    harness = Harness(tmp_path, mode="no-model")

    record = await harness.run_one()

    assert record.phase is JobPhase.FAILED
    assert "nulog_model.pt" in record.message
    assert harness.events.names()[-1] == "job_end"
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
    assert await harness.store.list("training-logs") == []


async def test_worker_runs_jobs_in_submission_order(harness: Harness):
    first = await harness.submit()
    second = await harness.submit(start=T0 + 60 * SECOND)

    worker = asyncio.create_task(harness.controller.run())
    try:
        deadline = time.monotonic() + 10
        while True:
            records = [await harness.state.get_job(r.job_id) for r in (first, second)]
            if all(r.phase.is_final for r in records):
                break
            assert time.monotonic() < deadline, "the worker did not finish both jobs"
            await asyncio.sleep(0.01)
    finally:
        await _stop(worker)

    assert [r.phase for r in records] == [JobPhase.SUCCEEDED, JobPhase.SUCCEEDED]
    assert [s.job_id for s in harness.launcher.specs] == [first.job_id, second.job_id]
    assert harness.events.of("job_start") == [first.job_id, second.job_id]
    assert harness.events.of("job_end") == [first.job_id, second.job_id]
    names = harness.events.names()
    assert names.index("job_end") < len(names) - 1 - names[::-1].index("job_start")  # no overlap on the GPU
    assert records[1].log_count == 3  # the second job only saw its own interval


async def test_worker_picks_up_a_job_submitted_while_it_waits(harness: Harness):
    worker = asyncio.create_task(harness.controller.run())
    try:
        await asyncio.sleep(0.05)
        record = await harness.submit()
        deadline = time.monotonic() + 10
        while not (await harness.state.get_job(record.job_id)).phase.is_final:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    finally:
        await _stop(worker)

    assert (await harness.state.get_job(record.job_id)).phase is JobPhase.SUCCEEDED


class CancelOnJobEnd(RecordingEvents):
    """Cancels the worker from inside job_end, so that the cancel lands as the job's task finishes."""

    worker: asyncio.Task | None = None

    async def job_end(self, job_id: str) -> None:
        await super().job_end(job_id)
        assert self.worker is not None
        self.worker.cancel()


async def test_worker_stops_when_cancelled_as_a_job_ends(harness: Harness):
    events = CancelOnJobEnd()
    harness.controller.events = events
    await harness.submit()

    worker = asyncio.create_task(harness.controller.run())
    events.worker = worker
    done, _ = await asyncio.wait({worker}, timeout=1)

    if not done:
        worker.cancel()  # a second cancel does reach it; leave no task behind
        await asyncio.wait({worker}, timeout=5)
    assert done == {worker}
    assert events.of("job_end")


async def test_queue_position_counts_jobs_ahead(harness: Harness):
    a, b, c = [await harness.submit() for _ in range(3)]

    assert [await harness.controller.queue_position(r.job_id) for r in (a, b, c)] == [0, 1, 2]

    await harness.state.save_job(a.advance(JobPhase.EXPORTING, "exporting logs"))  # a now runs
    assert [await harness.controller.queue_position(r.job_id) for r in (a, b, c)] == [0, 1, 2]

    await harness.state.save_job((await harness.state.get_job(a.job_id)).advance(JobPhase.FAILED, "x"))
    assert [await harness.controller.queue_position(r.job_id) for r in (b, c)] == [0, 1]
    assert await harness.controller.queue_position("unknown") == 0


async def test_submit_queues_a_record_with_the_request_and_query(harness: Harness):
    record = await harness.submit()

    stored = await harness.state.get_job(record.job_id)
    assert stored == record
    assert record.phase is JobPhase.QUEUED
    assert record.request == {"model_to_train": "nulog"} and record.requested_by == "test"
    assert LogQuery.model_validate(record.query).intervals == (Interval(start_ns=T0, end_ns=T0 + 600 * SECOND),)
    assert (await harness.submit()).seq > record.seq


async def test_submit_applies_the_max_documents_option(tmp_path: Path):
    harness = Harness(tmp_path)
    harness.controller.options = ControllerOptions(max_documents=2)

    record = await harness.run_one()

    assert record.query["max_documents"] == 2
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
