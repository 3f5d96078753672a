"""The rig of the fault-injection tests: a real nats-server, the real controller process, real trainers.

Faults are injected from outside, as an operator or a cluster would: nats-server killed and restarted on the
same port with the same store, paused with SIGSTOP, the controller SIGKILLed and started again, a trainer's
process killed. Everything is asserted as a client sees it:

- the announcements (`gpu_trainingjob_status`, `model_ready`, `model_update`) are captured by a JetStream
  stream of the rig's own, so that none is lost to the rig while NATS itself is down or restarting;
- `gpu_service_inference` is asked several times a second by a sampler that also looks, before and after
  each question, whether a trainer process is alive: a `YES` while one runs is a violation;
- the jobs are read back with `training_jobs`, the controller's health over its HTTP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.js.api import StorageType, StreamConfig

from tests.conftest import serve_gpu_service
from tests.processes import live_members
from training_controller.messages import CONTROLLER_HEADER
from training_controller.natsserver import NatsServer, free_port

ANNOUNCEMENTS_STREAM = "FAULT_RIG_ANNOUNCEMENTS"
ANNOUNCED = ["gpu_trainingjob_status", "model_ready", "model_update"]
FINAL = ("succeeded", "failed", "cancelled")


class Controller:
    """`training-controller serve` as a child process, with its log in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.http_port = int(env["HTTP_PORT"])
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"---- start {self.starts + 1} ----\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "training_controller", "serve"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: nothing of the controller's own cleanup runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def http(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{self.http_port}{path}"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                return response.status, await response.json()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


@dataclass
class Sample:
    at: float
    answer: str
    trainer_before: bool
    trainer_after: bool


@dataclass
class Rig:
    """One nats-server, one controller, one client, and what the client saw."""

    root: Path
    logs: Path
    epochs: int
    extra_env: dict[str, str] = field(default_factory=dict)
    nats_server: NatsServer = field(init=False)
    controller: Controller = field(init=False)
    nc: Any = field(init=False, default=None)
    samples: list[Sample] = field(default_factory=list)
    _sampler: asyncio.Task | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.nats_server = NatsServer(self.root / "nats")
        self.jobs_dir = self.root / "jobs"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "NATS_SERVER_URL": self.nats_server.url,
            "LOG_FILES_DIR": str(self.logs),
            "LOCAL_STORE_DIR": str(self.root / "store"),
            "LOCAL_JOBS_DIR": str(self.jobs_dir),
            "TRAIN_EPOCHS": str(self.epochs),
            "TRAIN_DEVICE": "cpu",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(free_port()),
            "NATS_FETCH_TIMEOUT_SECONDS": "0.5",
            "GPU_SERVICE_CHECK_SECONDS": "0.2",
            "RETRY_MAX_SECONDS": "2",
            "CANCEL_GRACE_SECONDS": "5",
            "LOG_LEVEL": "INFO",
            **self.extra_env,
        }
        self.controller = Controller(env, self.root / "controller.log")

    # -- the parts ------------------------------------------------------------------------------------

    async def start(self) -> Rig:
        self.nats_server.start()
        self.nc = await nats.connect(
            self.nats_server.url, name="fault-rig", max_reconnect_attempts=-1, reconnect_time_wait=0.2,
            allow_reconnect=True,
        )
        js = self.nc.jetstream()
        await js.add_stream(StreamConfig(name=ANNOUNCEMENTS_STREAM, subjects=ANNOUNCED, storage=StorageType.FILE))
        await serve_gpu_service(self.nc)  # Opni's GPU inference service: the controller asks it before any YES
        self.controller.start()
        await self.wait_ready()
        return self

    async def close(self) -> None:
        await self.stop_sampling()
        self.controller.stop()
        with contextlib.suppress(Exception):  # the rig is going away; a closing client is no news
            await self.nc.close()
        self.nats_server.stop()
        # No trainer outlives its test.
        for pid_file in self.jobs_dir.glob("*/pid"):
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)

    async def wait_ready(self, timeout: float = 60) -> None:
        """Until the controller answers on NATS and its /readyz says ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.controller.process is not None and self.controller.process.poll() is not None:
                raise AssertionError(f"the controller exited ({self.controller.process.returncode}):\n{self.controller.tail()}")
            try:
                reply = await self.nc.request("training_jobs", b"{}", timeout=1)
                status, _ = await self.controller.http("/readyz")
                if b'"jobs"' in reply.data and status == 200:
                    return
            except Exception:  # not up yet: NATS, the controller or its HTTP surface
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"the controller did not become ready within {timeout:.0f}s:\n{self.controller.tail()}")

    # -- NATS faults ----------------------------------------------------------------------------------

    def kill_nats(self) -> None:
        self.nats_server.kill()

    def restart_nats(self) -> None:
        """The same server again: same port, same JetStream store."""
        self.nats_server.start()

    def pause_nats(self) -> None:
        assert self.nats_server.process is not None
        self.nats_server.process.send_signal(signal.SIGSTOP)

    def resume_nats(self) -> None:
        assert self.nats_server.process is not None
        self.nats_server.process.send_signal(signal.SIGCONT)

    async def wait_client_connected(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.nc.is_connected:
            assert time.monotonic() < deadline, "the rig's client did not reconnect"
            await asyncio.sleep(0.1)

    # -- trainers -------------------------------------------------------------------------------------

    def trainer_groups(self) -> dict[str, int]:
        """job id -> process group of every trainer whose process still runs."""
        running = {}
        for pid_file in self.jobs_dir.glob("*/pid"):
            try:
                pgid = int(pid_file.read_text())
            except (OSError, ValueError):
                continue
            if live_members(pgid):
                running[pid_file.parent.name] = pgid
        return running

    def trainer_running(self) -> bool:
        return bool(self.trainer_groups())

    def kill_trainer(self, job_id: str) -> None:
        """SIGKILL the training process itself (not its wrapper), as the OOM killer would."""
        pgid = self.trainer_groups()[job_id]
        for pid in live_members(pgid):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[1:3] == [b"-m", b"nulog.job"]:  # the interpreter itself, not the wrapper that names it
                os.kill(pid, signal.SIGKILL)
                return
        raise AssertionError(f"no training process in group {pgid}")

    async def wait_training(self, timeout: float = 120) -> str:
        """Until a trainer process runs and has reported progress; returns its job id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for job_id in self.trainer_groups():
                events = self.jobs_dir / job_id / "events.log"
                if events.exists() and b'"event":"progress"' in events.read_bytes():
                    return job_id
            await asyncio.sleep(0.1)
        raise AssertionError(f"no training got under way within {timeout:.0f}s:\n{self.controller.tail()}")

    # -- what a client asks and sees -------------------------------------------------------------------

    async def train(self, payload: bytes) -> None:
        """`nats pub train '...'`: a plain publish, as an operator does it."""
        await self.nc.publish("train", payload)
        await self.nc.flush()

    async def jobs(self) -> list[dict[str, Any]]:
        reply = await self.nc.request("training_jobs", json.dumps({"limit": 1000}).encode(), timeout=5)
        return sorted(json.loads(reply.data)["jobs"], key=lambda j: j["seq"])

    async def wait_jobs(self, count: int, *, timeout: float = 300) -> list[dict[str, Any]]:
        """Until `count` jobs exist, all ended and settled (JobEnd given back)."""
        deadline = time.monotonic() + timeout
        listed: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                listed = await self.jobs()
            except Exception:  # NATS or the controller on its way back
                listed = listed
            if len(listed) >= count and all(j["phase"] in FINAL and not j["gpu_held"] for j in listed):
                return listed
            await asyncio.sleep(0.3)
        raise AssertionError(f"jobs did not all end within {timeout:.0f}s: {listed}\n{self.controller.tail()}")

    async def announcements(self, *, own: bool = True) -> list[tuple[str, bytes]]:
        """Everything announced since the rig started, in order, from the rig's stream; with `own`, only the
        controller's (an external trainer's JobStart/JobEnd, published by a test, left out)."""
        js = self.nc.jetstream()
        info = await js.stream_info(ANNOUNCEMENTS_STREAM)
        seen = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(ANNOUNCEMENTS_STREAM, seq)
            if own and msg.subject == "gpu_trainingjob_status" and CONTROLLER_HEADER not in (msg.headers or {}):
                continue
            seen.append((msg.subject, msg.data or b""))
        return seen

    async def gpu_answer(self) -> str:
        return (await self.nc.request("gpu_service_inference", b"probe", timeout=3)).data.decode()

    def start_sampling(self, every: float = 0.15) -> None:
        async def sample() -> None:
            while True:
                before = self.trainer_running()
                try:
                    answer = await self.gpu_answer()
                except Exception:  # NATS down or paused, controller restarting: no answer is no sample
                    answer = ""
                after = self.trainer_running()
                if answer:
                    self.samples.append(Sample(time.monotonic(), answer, before, after))
                await asyncio.sleep(every)

        self._sampler = asyncio.create_task(sample())

    async def stop_sampling(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None

    # -- the invariants ---------------------------------------------------------------------------------

    async def assert_invariants(self, jobs: list[dict[str, Any]], *, succeeded: int) -> list[tuple[str, bytes]]:
        """What every scenario must show once its jobs have ended."""
        seen = await self.announcements()
        gpu = [data for subject, data in seen if subject == "gpu_trainingjob_status"]
        ready = [json.loads(data)["job_id"] for subject, data in seen if subject == "model_ready"]
        ok = [j["job_id"] for j in jobs if j["phase"] == "succeeded"]
        assert len(ok) == succeeded, [(j["job_id"], j["phase"], j["message"]) for j in jobs]
        # JobStart and JobEnd balance, and alternate: the GPU is never claimed twice or freed twice.
        assert gpu == [b"JobStart", b"JobEnd"] * (len(gpu) // 2), gpu
        launched = [j for j in jobs if any(h["phase"] == "running" for h in j["history"])]
        assert gpu.count(b"JobStart") == len(launched), (gpu, jobs)
        # model_ready once per success, and only for successes.
        assert sorted(ready) == sorted(ok), (ready, ok)
        # Never YES while a trainer ran (sampled before and after each answer).
        wrong = [s for s in self.samples if s.answer == "YES" and s.trainer_before and s.trainer_after]
        assert not wrong, f"gpu_service_inference answered YES while a trainer ran: {wrong[:3]}"
        # And YES again once nothing trains.
        assert not self.trainer_running()
        assert await self.gpu_answer() == "YES"
        status, health = await self.controller.http("/healthz")
        assert status == 200, health
        return seen

    async def assert_a_new_train_works(self, payload: bytes, *, before: int) -> None:
        """A `train` published now becomes one more job, which succeeds."""
        await self.train(payload)
        jobs = await self.wait_jobs(before + 1)
        assert len(jobs) == before + 1
        assert jobs[-1]["phase"] == "succeeded", jobs[-1]["message"]
