"""Test doubles of the ports: a scripted launcher, recording events, and a state store that fails on demand.

They stand in for what the unit tests do not exercise (processes, NATS); everything else is real: the files
log source, the local object store, the memory state store.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nulog.protocol import MODEL_FILE, VOCAB_FILE, ProgressEvent, StageEvent
from training_controller.adapters.state.memory import MemoryStateStore
from training_controller.core.errors import StateUnavailable
from training_controller.core.jobs import JobRecord
from training_controller.core.ports import (
    Events,
    Finished,
    GpuService,
    JobSpec,
    JobUpdate,
    LaunchedJob,
    Launcher,
    LauncherEvent,
    LogLine,
    PhaseUpdate,
    TrainerOutput,
)

SECOND = 1_000_000_000
T0 = 1_617_038_400 * SECOND  # 2021-03-29 17:20:00 UTC, on a minute boundary
PROGRESS = [
    ProgressEvent(epoch=1, epochs=1, step=1, steps=2, loss=0.5, percent=50, elapsed_s=1, eta_s=1),
    ProgressEvent(epoch=1, epochs=1, step=2, steps=2, loss=0.2, percent=100, elapsed_s=2, eta_s=0),
]
LOGS = [
    (T0 + 1 * SECOND, "GET /api 200 from 10.0.0.1 took 3.1ms"),
    (T0 + 2 * SECOND, "user 42 logged in"),
    (T0 + 61 * SECOND, "request 123e4567-e89b-12d3-a456-426614174000 done"),
    (T0 + 62 * SECOND, "cache hit ratio 0.75"),
    (T0 + 125 * SECOND, "worker started"),
]


def write_logs(directory: Path, logs: list[tuple[int, str]] = LOGS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "app.jsonl").open("w") as f:
        for ts, line in reversed(logs):  # out of order on disk: the source sorts
            doc = {"timestamp": ts, "log": line, "deployment": "web", "namespace_name": "shop", "cluster_id": "c1"}
            f.write(json.dumps(doc) + "\n")
    return directory


class RecordingEvents(Events):
    """Appends (name, args) for every announcement, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def job_start(self, job_id: str) -> None:
        self.calls.append(("job_start", job_id))

    async def job_end(self, job_id: str) -> None:
        self.calls.append(("job_end", job_id))

    async def model_ready(self, *, bucket: str, model_file: str, vocab_file: str, job_id: str) -> None:
        files = {"bucket": bucket, "model_file": model_file, "vocab_file": vocab_file, "job_id": job_id}
        self.calls.append(("model_ready", files))

    async def model_update(self, status: str) -> None:
        self.calls.append(("model_update", status))

    async def job_reset(self) -> None:
        self.calls.append(("job_reset", None))

    async def job_progress(self, job_id: str, update: JobUpdate) -> None:
        self.calls.append(("job_progress", (job_id, update)))

    async def workload_parameters(self, workloads: dict[str, Any], status_type: str) -> None:
        self.calls.append(("workload_parameters", (workloads, status_type)))

    async def inference_granted(self, payload: bytes) -> None:
        self.calls.append(("inference_granted", payload))

    def names(self, *, phases: bool = False) -> list[str]:
        """Names of the calls, leaving out phase reports unless asked."""
        return [
            name for name, args in self.calls
            if phases or not (name == "job_progress" and isinstance(args[1], PhaseUpdate))
        ]

    def of(self, name: str) -> list[Any]:
        return [args for n, args in self.calls if n == name]

    def phases(self) -> list[str]:
        return [u.phase.value for _, u in self.of("job_progress") if isinstance(u, PhaseUpdate)]


class FakeGpuService(GpuService):
    """The GPU inference service: `up` says whether it answers."""

    def __init__(self, up: bool = True) -> None:
        self.up = up

    async def running(self) -> bool:
        return self.up


class ScriptedLauncher(Launcher):
    """A trainer without a process. `mode`: `succeed` writes the model files, `no-model` writes nothing,
    `fail` reports an error, `hang` runs until cancelled."""

    name = "scripted"

    def __init__(self, mode: str = "succeed") -> None:
        self.mode = mode
        self.specs: list[JobSpec] = []
        self.model_bytes: dict[str, bytes] = {}
        self.cancelled: list[str] = []
        self.running: set[str] = set()
        self._stop: dict[str, asyncio.Event] = {}
        self.follow_failures = 0  # how many times events() breaks off with a TemporaryError first

    async def launch(self, spec: JobSpec) -> None:
        self.specs.append(spec)
        self.running.add(spec.job_id)
        self._stop[spec.job_id] = asyncio.Event()
        if self.mode == "succeed":
            self.model_bytes[spec.job_id] = f"weights of {spec.job_id}".encode() + bytes(range(256))
            await asyncio.to_thread(self._write_model, spec)

    def _write_model(self, spec: JobSpec) -> None:
        out = Path(spec.args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / MODEL_FILE).write_bytes(self.model_bytes[spec.job_id])
        (out / VOCAB_FILE).write_text(f"<PAD>\n<UNK>\nvocab-of-{spec.job_id}\n")

    async def events(self, job_id: str) -> AsyncIterator[LauncherEvent]:
        from training_controller.core.errors import LauncherUnavailable

        yield TrainerOutput(StageEvent(stage="training", message="starting"))
        if self.follow_failures:
            self.follow_failures -= 1
            raise LauncherUnavailable("the launcher's API is away", delay=0.01)
        for p in PROGRESS:
            await asyncio.sleep(0)
            yield TrainerOutput(p)
        yield LogLine("epoch done")
        if self.mode == "hang":
            await self._stop[job_id].wait()
            yield Finished(succeeded=False, message="killed")
            return
        self.running.discard(job_id)
        if self.mode == "fail":
            yield Finished(succeeded=False, message="exit code 1: out of memory")
        else:
            yield Finished(succeeded=True, message="exit code 0")

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        self.running.discard(job_id)
        if job_id in self._stop:
            self._stop[job_id].set()

    async def list_jobs(self) -> list[LaunchedJob]:
        return [LaunchedJob(s.job_id, "running" if s.job_id in self.running else "succeeded") for s in self.specs]


class FlakyState(MemoryStateStore):
    """A memory state store whose writes fail with StateUnavailable while `down` is set, or `fail_next` times."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.fail_next = 0
        self.failures = 0

    def _maybe_fail(self, what: str) -> None:
        if self.down or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            self.failures += 1
            raise StateUnavailable(f"{what}: NATS did not answer", delay=0.01)

    async def save_job(self, record: JobRecord) -> None:
        self._maybe_fail(f"saving job {record.job_id}")
        await super().save_job(record)

    async def put_value(self, key: str, value: Any) -> None:
        self._maybe_fail(f"writing {key}")
        await super().put_value(key, value)
