"""`training-controller demo`: one training, end to end, on embedded defaults.

It starts what a cluster would run, on this machine: a real nats-server with JetStream, the controller (as
`training-controller serve`, with the `files` log source, the `local` store and the `local` launcher) and a
sample of logs. Then it does what an operator does: publishes a `train` request, exactly as
`nats pub train '{...}'` would, and follows the job on NATS until `model_ready` and `JobEnd`. Every process
it started is stopped on the way out, Ctrl-C included. With `--console` it prints the web console's URL and a
token made for this run, and keeps everything running after the training until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

from nulog.protocol import ProgressEvent, StageEvent
from training_controller.adapters.launchers.local import terminate_jobs
from training_controller.api.auth import new_token
from training_controller.core.jobs import JobPhase
from training_controller.core.masking import mask
from training_controller.demo.samples import iter_documents, write_sample_logs
from training_controller.messages import LineLog, PhaseLog, Subjects, TrainerLog, parse_job_log
from training_controller.natsserver import NatsServer, free_port

# The sample covers 2021-03-29 17:00-18:00 UTC, around the README's example interval.
DATA_END_NS = 1_617_040_800 * 10**9
MINUTE_NS = 60 * 10**9
INTERVALS = [
    {"start_ts": DATA_END_NS - 50 * MINUTE_NS, "end_ts": DATA_END_NS - 35 * MINUTE_NS},
    {"start_ts": 1_617_039_360_000_000_000, "end_ts": 1_617_039_450_000_000_000},
    {"start_ts": DATA_END_NS - 20 * MINUTE_NS, "end_ts": DATA_END_NS - 10 * MINUTE_NS},
]


def say(text: str) -> None:
    print(text, flush=True)


class DemoFailed(Exception):
    """The demo could not show a trained model; the message says why."""


class Demo:
    """The processes and files of one demo run."""

    def __init__(self, root: Path, *, epochs: int, max_lines: int | None = None, console: bool = False,
                 port: int | None = None) -> None:
        self.root = root
        self.console = console
        self.port = port or free_port()
        self.token, self._tokens = new_token("demo", "rw")
        self.epochs = epochs
        self.max_lines = max_lines
        self.logs_dir = root / "logs"
        self.store_dir = root / "store"
        self.jobs_dir = root / "jobs"
        self.nats = NatsServer(root / "nats")
        self.controller: subprocess.Popen[bytes] | None = None
        self._last_progress: tuple[Any, int] | None = None

    def start(self) -> None:
        say("== 1. sample logs")
        paths = write_sample_logs(self.logs_dir, hours=1, end_ns=DATA_END_NS, rate_per_s=3.0, seed=7)
        count = sum(1 for _ in iter_documents(paths))
        say(f"   {count} log documents from 4 workloads in {self.logs_dir}")
        say("== 2. nats-server with JetStream")
        self.nats.start()
        say(f"   listening on {self.nats.url}")
        say("== 3. training controller (files log source, local store, local launcher)")
        env = {
            **os.environ,
            "NATS_SERVER_URL": self.nats.url,
            "LOG_SOURCE": "files",
            "LOG_FILES_DIR": str(self.logs_dir),
            "OBJECT_STORE": "local",
            "LOCAL_STORE_DIR": str(self.store_dir),
            "LAUNCHER": "local",
            "LOCAL_JOBS_DIR": str(self.jobs_dir),
            "TRAIN_EPOCHS": str(self.epochs),
            "TRAIN_DEVICE": "cpu",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(self.port),
            "API_TOKENS": self._tokens,
            **({"TRAIN_MAX_LINES": str(self.max_lines)} if self.max_lines else {}),
        }
        log_file = (self.root / "controller.log").open("ab")
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "training_controller", "serve"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log_file.close()
        say(f"   pid {self.controller.pid}, log in {self.root / 'controller.log'}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def show_console(self) -> None:
        say(f"   web console: {self.url}")
        say(f"   token:       {self.token}")

    def stop(self) -> None:
        if self.controller is not None and self.controller.poll() is None:
            self.controller.send_signal(signal.SIGTERM)
            try:
                self.controller.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.controller.kill()
                self.controller.wait()
        if self.jobs_dir.is_dir():
            terminate_jobs(self.jobs_dir)
        self.nats.stop()

    def controller_log_tail(self, lines: int = 15) -> str:
        path = self.root / "controller.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    async def operate(self, *, timeout: float) -> dict[str, Any]:
        """Publish a train request as an operator would, and follow it until the model is ready."""
        nc = await nats.connect(self.nats.url, name="demo-operator")
        inbox: asyncio.Queue = asyncio.Queue()
        try:
            for subject in (Subjects.GPU_TRAININGJOB_STATUS, Subjects.MODEL_READY, Subjects.MODEL_UPDATE, "training_logs.>"):
                await nc.subscribe(subject, cb=inbox.put)
            await self._wait_until_ready(nc)
            if self.console:
                self.show_console()
            payload = json.dumps({"model_to_train": "nulog", "time_intervals": INTERVALS})
            say("== 4. operator publishes a training request")
            say(f"   nats pub train '{payload}'")
            await nc.publish(Subjects.TRAIN, payload.encode())
            return await self._follow(nc, inbox, deadline=time.monotonic() + timeout)
        finally:
            await nc.close()

    async def _wait_until_ready(self, nc: Any) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.controller is not None and self.controller.poll() is not None:
                raise DemoFailed(f"the controller exited with code {self.controller.returncode}:\n{self.controller_log_tail()}")
            try:
                reply = await nc.request(Subjects.TRAINING_JOBS, b"{}", timeout=1)
                if b'"jobs"' in reply.data:
                    return
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                await asyncio.sleep(0.2)
        raise DemoFailed(f"the controller did not answer within 30s:\n{self.controller_log_tail()}")

    async def _follow(self, nc: Any, inbox: asyncio.Queue, *, deadline: float) -> dict[str, Any]:
        say("== 5. following the job on NATS")
        seen: list[str] = []
        job_id = ""
        ready: dict[str, Any] | None = None
        failed = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DemoFailed(f"no model within the time limit; events seen: {seen}\n{self.controller_log_tail()}")
            try:
                msg = await asyncio.wait_for(inbox.get(), timeout=remaining)
            except TimeoutError:
                continue
            if msg.subject == Subjects.GPU_TRAININGJOB_STATUS:
                seen.append(msg.data.decode())
                say(f"   gpu_trainingjob_status: {msg.data.decode()}")
                if msg.data == b"JobEnd":
                    break
            elif msg.subject == Subjects.MODEL_READY:
                ready = json.loads(msg.data)
                seen.append("model_ready")
                say("   model_ready received")
            elif msg.subject == Subjects.MODEL_UPDATE:
                say(f"   model_update: {msg.data.decode()}")
            else:
                update = parse_job_log(msg.data)
                job_id = update.job_id
                self._show(update)
                if isinstance(update, PhaseLog) and update.phase is JobPhase.FAILED:
                    failed = update.message
        record = json.loads((await nc.request(Subjects.TRAINING_STATUS, json.dumps({"job_id": job_id}).encode(), timeout=5)).data)
        if ready is None:
            raise DemoFailed(f"job {job_id} did not produce a model: {failed or record.get('message')}")
        return {"model_ready": ready, "record": record, "events": seen}

    def _show(self, update: PhaseLog | TrainerLog | LineLog) -> None:
        if isinstance(update, PhaseLog):
            say(f"   job {update.job_id}: {update.phase.value:<9} {update.message}")
        elif isinstance(update, TrainerLog) and isinstance(update.event, ProgressEvent):
            p = update.event
            # One line per epoch change or per 10% of the way, not one per step.
            mark = (p.epoch, int(p.percent // 10))
            if mark == self._last_progress:
                return
            self._last_progress = mark
            say(
                f"   job {update.job_id}: epoch {p.epoch}/{p.epochs}  step {p.step}/{p.steps}  loss {p.loss:.4f}"
                f"  {p.percent:5.1f}%  eta {p.eta_s:.0f}s"
            )
        elif isinstance(update, TrainerLog) and isinstance(update.event, StageEvent):
            say(f"   job {update.job_id}: trainer {update.event.stage}: {update.event.message}")

    def show_templates(self, model_ready: dict[str, Any]) -> None:
        say("== 7. templates the new model extracts")
        model = self.store_dir / model_ready["bucket"] / model_ready["bucket_files"]["model_file"]
        samples = self._sample_lines()
        masked = [mask(line) for line in samples]
        result = subprocess.run(
            [sys.executable, "-m", "nulog", "templates", "--model", str(model), "-"],
            input="\n".join(masked) + "\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise DemoFailed(f"nulog templates failed: {result.stderr.strip()[-500:]}")
        for raw, line in zip(samples, result.stdout.splitlines(), strict=False):
            say(f"   log:      {raw[:150]}")
            say(f"   template: {json.loads(line)['template'][:150]}")
            say("")

    def _sample_lines(self) -> list[str]:
        """One line from each workload, from the trained intervals."""
        picked: dict[str, str] = {}
        start, end = INTERVALS[0]["start_ts"], INTERVALS[0]["end_ts"]
        for doc in iter_documents(sorted(self.logs_dir.glob("*.jsonl"))):
            if start <= doc["timestamp"] < end and not doc["log"].startswith("\t"):
                picked.setdefault(doc["deployment"], doc["log"])
                if len(picked) == 4:
                    break
        return list(picked.values())


def run_demo(
    *, keep: bool = False, epochs: int = 5, timeout: float = 170.0, workdir: Path | None = None,
    console: bool = False, port: int | None = None,
) -> int:
    """Run the demo; returns the exit code. With `console`, keep the stack running until Ctrl-C."""
    started = time.monotonic()
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="training-controller-demo-", dir=workdir))
    demo = Demo(root, epochs=epochs, console=console, port=port)
    try:
        demo.start()
        outcome = asyncio.run(demo.operate(timeout=timeout))
        say("== 6. result")
        say("   model_ready payload:")
        say("   " + json.dumps(outcome["model_ready"]))
        say("   job record:")
        record = outcome["record"]
        summary = {k: record[k] for k in ("job_id", "phase", "message", "log_count", "train_data_version_hash", "artifacts", "created_at", "finished_at")}
        say("   " + json.dumps(summary, indent=2).replace("\n", "\n   "))
        say("   history: " + " -> ".join(step["phase"] for step in record["history"]))
        say("   gpu_trainingjob_status / model_ready order: " + ", ".join(outcome["events"]))
        demo.show_templates(outcome["model_ready"])
        say(f"demo finished in {time.monotonic() - started:.0f}s")
        if not console:
            say("To open the web console on this stack (trainings, live logs, loss curves, models, a try page):")
            say("   .venv/bin/training-controller demo --console    (it keeps running until Ctrl-C)")
            return 0
        say("== 8. the web console, until Ctrl-C")
        demo.show_console()
        say(f"   REST API:    curl -H 'Authorization: Bearer {demo.token}' {demo.url}api/v1/trainings")
        while demo.controller is not None and demo.controller.poll() is None:
            time.sleep(0.5)
        print(f"the controller exited with code {demo.controller.returncode if demo.controller else '?'}", file=sys.stderr)
        return 1
    except DemoFailed as e:
        print(f"demo failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if console:
            print("stopping the demo's stack", file=sys.stderr)
            return 0
        print("demo interrupted; stopping everything it started", file=sys.stderr)
        return 130
    finally:
        demo.stop()
        if keep:
            say(f"files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
