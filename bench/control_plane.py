"""`python -m bench.control_plane`: the controller's request/reply answers beside a bare nats-py responder's.

The subjects the gateway and the inference services ask all the time (`model_status`,
`gpu_service_inference`, `workload_parameters`, and `training_status` of an existing job) are asked of the
real controller process (`training-controller serve`, as tests/faults runs it) and of a bare responder on
the same nats-server, in the same run, round by round: a round asks each subject 2,000 times at each
concurrency (requests in flight at once, over one client connection), first of one side then of the other,
the order swapped every round. The bare responder is a process of its own (`--bare`) with its own
connection; it answers each subject from a subscription callback with `msg.respond` and the very bytes the
controller answered in that phase (so the same payload sizes), and does nothing else. The client is this
process. So the ratios say what the controller adds to NATS's and nats-py's own cost.

Phases, each on the same nats-server:
- idle: one past job (the one `training_status` asks for), a watchlist, a last model;
- training: a real NuLog training (TRAIN_EPOCHS=300 on a few minutes of the sample logs) runs meanwhile;
- exporting: an export of 1M documents from the files source runs meanwhile (the process exporter, as in
  production); a round counts only if the export ran from its start to its end;
- records: the controller restarted with 10,000 past job records in the `training-jobs` bucket, written
  there before it starts in the record format of `core/jobs.py`.

Also: the controller's start-up time (process start to the first answer) with one and with 10,000 past
records, and, for one 1M export with no requests asked meanwhile, its rate and how late the controller's
event loop answers meanwhile, seen from outside as the round trip of `/healthz` every 5 ms (the lag probe of
bench/export_rate.py needs to run inside the process; this is its proxy from another one).

Medians over the rounds; the ratios are the medians of each round's controller/bare ratio (the two sides of
a round ran back to back, under the same load from the rest of the machine). One round's p99 ratio is a
noisy figure here: at concurrency 50 a round of one subject lasts 60-70 ms and its p99 is its 20 slowest
requests, so whether one scheduling stall of a few ms fell into it decides that round. Seen on this 2-core
machine: rounds' ratios from 0.17 to 4.6 for `model_status`, whose CPU per request is within 1.2x of the
bare responder's, and in some runs stalls of 50-80 ms on both sides. Their median
is robust to the rare long stalls (which a p99 of all rounds' requests pooled is not: 200 requests in
flight are 1.1% of 18,000); 15 rounds by default, as with 9 the median of a cell at a true 1.1-1.2x still
crossed 1.5x in a cell or two of 32 in most runs, a different cell each time. The table shows each cell's
range and how many rounds were over 1.5x. The load average and the busiest other processes are printed
before and after, as the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ("model_status", "gpu_service_inference", "workload_parameters", "training_status")
BARE_PREFIX = "bare."
BARE_SET = "bare._replies"
EXISTING_JOB = "bench-past-00000"
# The sample logs: 1M documents (about 100 a second) ending at the sample logs' usual end.
END_NS = 1_617_040_800 * 10**9
RATE_PER_S = 100.0
MINUTE_NS = 60 * 10**9
INFERENCE_PAYLOAD = json.dumps({"batch": ["x" * 90] * 10}).encode()  # an opaque ~1 KB batch
WATCHLIST = {
    "uuid": "3f1c2a9e-bench",
    "workloads": {
        f"cluster-{c}": {ns: [f"{ns}-api", f"{ns}-worker", f"{ns}-db"] for ns in ("shop", "data", "auth", "web")}
        for c in range(3)
    },
}
TARGET_P99 = 1.5  # controller p99 <= 1.5x bare, at concurrency 50 and 200
TARGET_RPS = 0.7  # controller throughput >= 0.7x bare
TARGET_STARTUP_S = 1.0


# -- the bare responder (a process of its own) ---------------------------------------------------------


async def bare_responder(url: str) -> None:
    """Answers `bare.<subject>` with the bytes last set for it, until stdin closes."""
    import nats

    nc = await nats.connect(url, name="bench-bare-responder")
    replies: dict[str, bytes] = dict.fromkeys(SUBJECTS, b"")

    def responder(subject: str) -> Callable[[Any], Awaitable[None]]:
        async def answer(msg: Any) -> None:
            await msg.respond(replies[subject])

        return answer

    async def set_replies(msg: Any) -> None:
        replies.update({k: v.encode() for k, v in json.loads(msg.data).items()})
        await msg.respond(b"ok")

    for subject in SUBJECTS:
        await nc.subscribe(BARE_PREFIX + subject, cb=responder(subject))
    await nc.subscribe(BARE_SET, cb=set_replies)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await nc.close()


# -- what is measured ------------------------------------------------------------------------------------


@dataclass
class Run:
    """One side's 2,000 requests of one subject at one concurrency."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    rps: float
    wrong: int  # replies other than the phase's reference reply (an error reply, a timeout)
    cpu_us: float  # CPU time the responding process spent per request (all its threads)


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of a process so far, in ns (schedstat: finer than the clock ticks of stat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, ended threads included (clock ticks of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def ask(
    nc: Any, subject: str, payload: bytes, *, concurrency: int, requests: int, expect: bytes | None, pid: int
) -> Run:
    """`requests` requests, `concurrency` of them in flight at any time; latency of each, rate of all, and
    the CPU time of the responding process `pid`."""
    latencies: list[float] = []
    left = requests
    wrong = 0

    async def client() -> None:
        nonlocal left, wrong
        while left > 0:
            left -= 1
            started = time.perf_counter()
            try:
                reply = await nc.request(subject, payload, timeout=10)
                ok = expect is None or reply.data == expect
            except Exception:  # a timeout or no responder: counted, and its wait is its latency
                ok = False
            latencies.append(time.perf_counter() - started)
            wrong += not ok

    cpu = cpu_ns(pid)
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    cpu = cpu_ns(pid) - cpu
    ms = sorted(x * 1000 for x in latencies)
    return Run(
        p50_ms=statistics.median(ms),
        p99_ms=ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        max_ms=ms[-1],
        rps=requests / seconds,
        wrong=wrong,
        cpu_us=cpu / 1000 / requests,
    )


@dataclass
class Phase:
    """The runs of one phase: (subject, concurrency, side) -> one Run a round."""

    name: str
    runs: dict[tuple[str, int, str], list[Run]] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)  # reply size per subject
    discarded: int = 0  # rounds that did not run wholly within the phase
    note: str = ""


# -- the rig -----------------------------------------------------------------------------------------------


def write_logs(directory: Path, documents: int) -> None:
    """`documents` sample documents (a little more: arrivals are random) ending at END_NS."""
    from training_controller.demo.samples import write_sample_logs

    hours = documents * 1.02 / RATE_PER_S / 3600
    write_sample_logs(directory, hours=hours, end_ns=END_NS, rate_per_s=RATE_PER_S, seed=3, file_hours=0.25)


def cached_logs(cache: Path, documents: int) -> Path:
    directory = cache / f"logs-{documents}"
    done = directory / ".complete"
    if not done.exists():
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.jsonl"):
            old.unlink()
        write_logs(directory, documents)
        done.touch()
    return directory


def past_record(i: int, *, seq: int) -> Any:
    """A succeeded, settled job as the controller would have stored it, through its real lifecycle."""
    from nulog.protocol import ProgressEvent
    from training_controller.core.jobs import Artifacts, JobPhase, JobRecord, TrainingData, WorkerInfo
    from training_controller.core.queries import Interval, LogQuery

    job_id = f"bench-past-{i:05d}"
    start = END_NS - (i % 50 + 5) * MINUTE_NS
    request = {"model_to_train": "nulog", "time_intervals": [{"start_ts": start, "end_ts": start + 3 * MINUTE_NS}]}
    record = JobRecord.new(
        job_id=job_id, seq=seq, request=request,
        query=LogQuery(intervals=(Interval(start_ns=start, end_ns=start + 3 * MINUTE_NS),)),
        requested_by="nats:train (stream, TrainRequest)", parameters={"epochs": 3, "max_lines": None, "seed": 0},
        request_hash=f"{i:064x}", stream_seq=seq,
    )
    record = record.advance(JobPhase.EXPORTING, "exporting logs")
    record = record.advance(
        JobPhase.LAUNCHING, "exported 18000 documents", log_count=18_000,
        train_data_version_hash=f"{i * 7919:064x}",
        training_data=TrainingData(
            bucket="training-logs", data=f"{job_id}/windows.jsonl.gz", manifest=f"{job_id}/manifest.json"
        ),
    )
    record = record.advance(
        JobPhase.RUNNING, "trainer started",
        workers=(WorkerInfo(index=0, role="master", name="12345", state="running"),), trainer_may_run=True, gpu_held=True,
    )
    record = record.evolve(progress=ProgressEvent(
        epoch=3, epochs=3, step=300, steps=300, loss=0.4213, percent=100.0, elapsed_s=61.2, eta_s=0.0
    ))
    record = record.advance(
        JobPhase.SUCCEEDED, "model published",
        artifacts=Artifacts(
            bucket="opni-nulog-models-archive", model=f"{job_id}/nulog_model.pt", vocab=f"{job_id}/vocab.txt",
            metrics=f"{job_id}/metrics.json", latest_model="nulog_model_latest.pt", latest_vocab="vocab.txt",
        ),
        workers=(WorkerInfo(index=0, role="master", name="12345", state="succeeded"),),
        trainer_may_run=False, gpu_held=False, trained=True, announced=True, replied=True,
    )
    return record


async def seed(url: str, records: int, *, first: int = 0) -> None:
    """Write past job records (and, with the first, a watchlist and a last model) into the controller's
    buckets, created exactly as the controller creates them."""
    import nats

    from training_controller.adapters.state.nats_kv import (
        CONTROLLER_BUCKET,
        DESCRIPTIONS,
        JOBS_BUCKET,
        PARAMETERS_BUCKET,
        VALUE_BUCKETS,
    )
    from training_controller.bus import Bus
    from training_controller.config import NatsSettings

    nc = await nats.connect(url, name="bench-seed")
    try:
        bus = Bus(nc, NatsSettings(nats_server_url=url))
        buckets = {n: await bus.key_value(n, description=DESCRIPTIONS[n]) for n in (JOBS_BUCKET, *VALUE_BUCKETS)}
        jobs = buckets[JOBS_BUCKET]
        for chunk in range(first, first + records, 500):
            batch = [past_record(i, seq=i + 1) for i in range(chunk, min(chunk + 500, first + records))]
            await asyncio.gather(*(jobs.put(r.job_id, r.model_dump_json().encode()) for r in batch))
        if first == 0:
            await buckets[PARAMETERS_BUCKET].put("modelTrainingParameters", json.dumps(WATCHLIST).encode())
            last = {"job_id": EXISTING_JOB, "workloads": WATCHLIST["workloads"], "at": "2021-03-29T17:30:00.000Z"}
            await buckets[CONTROLLER_BUCKET].put("lastModelTrained", json.dumps(last).encode())
    finally:
        await nc.close()


def spawn_bare(url: str) -> subprocess.Popen[str]:
    """The bare responder's process, once it answers."""
    bare = subprocess.Popen(
        [sys.executable, "-m", "bench.control_plane", "--bare", url],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert bare.stdout is not None
    if bare.stdout.readline().strip() != "ready":
        raise RuntimeError("the bare responder did not start")
    return bare


class Rig:
    """A nats-server, the GPU service, the bare responder, the controller process, and this client."""

    def __init__(self, root: Path, logs: Path, *, epochs: int, max_lines: int) -> None:
        from tests.faults.harness import Controller
        from training_controller.natsserver import NatsServer, free_port

        self.root = root
        self.nats_server = NatsServer(root / "nats")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "NATS_SERVER_URL": self.nats_server.url,
            "LOG_FILES_DIR": str(logs),
            "LOCAL_STORE_DIR": str(root / "store"),
            "LOCAL_JOBS_DIR": str(root / "jobs"),
            "TRAIN_EPOCHS": str(epochs),
            "TRAIN_MAX_LINES": str(max_lines),
            "TRAIN_DEVICE": "cpu",
            "MAX_DOCUMENTS": "1000000",
            "JOB_RETENTION_COUNT": "100000",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(free_port()),
            "GPU_SERVICE_CHECK_SECONDS": "0.5",
            "LOG_LEVEL": "INFO",
        }
        self.controller = Controller(env, root / "controller.log")
        self.nc: Any = None
        self.bare: subprocess.Popen[str] | None = None
        self.started_wall = 0.0
        self.startup_cpu = 0.0

    async def start(self) -> None:
        import nats

        from tests.conftest import serve_gpu_service

        self.nats_server.start()
        self.nc = await nats.connect(self.nats_server.url, name="bench-client", pending_size=64 * 1024 * 1024)
        self.gpu = await nats.connect(self.nats_server.url, name="bench-gpu-service")
        await serve_gpu_service(self.gpu)
        self.bare = spawn_bare(self.nats_server.url)

    async def start_controller(self) -> float:
        """Start the controller; seconds from the process's start to its first answer (and, in
        `startup_cpu`, the CPU seconds it used until then: what the wait would be on an idle machine)."""
        from training_controller.messages import Subjects

        started = time.perf_counter()
        self.started_wall = time.time()
        self.controller.start()
        probe = json.dumps({"job_id": EXISTING_JOB}).encode()
        deadline = started + 120
        while time.perf_counter() < deadline:
            assert self.controller.process is not None
            if self.controller.process.poll() is not None:
                raise RuntimeError(f"the controller exited:\n{self.controller.tail()}")
            try:
                await self.nc.request(Subjects.TRAINING_STATUS, probe, timeout=0.05)
                seconds = time.perf_counter() - started
                self.startup_cpu = process_cpu_seconds(self.controller.process.pid)
                return seconds
            except Exception:  # no responder yet, or no answer in time: not up yet
                await asyncio.sleep(0.005)
        raise RuntimeError(f"the controller did not answer within 120 s:\n{self.controller.tail()}")

    def startup_breakdown(self) -> dict[str, float]:
        """Seconds from the process's start to its log lines that mark start-up's steps."""
        marks = {"records loaded": "loaded ", "ready": "training controller ready"}
        start = self.controller.log.read_text(errors="replace").rsplit("---- start", 1)[-1]
        found: dict[str, float] = {}
        for line in start.splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", line)
            if not m:
                continue
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for name, text in marks.items():
                if name not in found and text in line:
                    found[name] = round(at - self.started_wall, 3)
        if (m := re.search(r"loaded (\d+) job records", start)) is not None:
            found["records"] = int(m.group(1))
        found["cpu_seconds"] = round(self.startup_cpu, 3)
        return found

    async def close(self) -> None:
        self.controller.stop()
        if self.bare is not None:
            assert self.bare.stdin is not None
            self.bare.stdin.close()
            self.bare.wait(timeout=10)
        for client in (self.nc, self.gpu):
            with contextlib.suppress(Exception):  # going away; a closing client is no news
                await client.close()
        self.nats_server.stop()

    async def request_json(self, subject: str, payload: Any, *, timeout: float = 10) -> Any:
        reply = await self.nc.request(subject, json.dumps(payload).encode(), timeout=timeout)
        return json.loads(reply.data)

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self.request_json("training_status", {"job_id": job_id})

    async def submit(self, minutes: float, *, offset_ns: int = 0, end_ns: int = END_NS) -> str:
        """A `train` request over the last `minutes` before `end_ns`; a distinct offset makes a new job."""
        start = end_ns - int(minutes * MINUTE_NS) + offset_ns
        payload = {"model_to_train": "nulog", "time_intervals": [{"start_ts": start, "end_ts": end_ns}]}
        reply = await self.request_json("train", payload)
        if "job_id" not in reply:
            raise RuntimeError(f"train was refused: {reply}")
        return reply["job_id"]

    async def wait_job(self, job_id: str, ready: Callable[[dict[str, Any]], bool], *, what: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = await self.job(job_id)
            if ready(record):
                return record
            await asyncio.sleep(0.05)
        raise RuntimeError(f"job {job_id} did not get {what} within {timeout:.0f}s:\n{self.controller.tail()}")

    async def cancel(self, job_id: str) -> None:
        record = await self.job(job_id)
        if record["phase"] not in ("succeeded", "failed", "cancelled"):
            await self.request_json("training_cancel", {"job_id": job_id})
        await self.wait_job(
            job_id, lambda r: r["phase"] in ("succeeded", "failed", "cancelled") and not r["gpu_held"], what="ended",
            timeout=120,
        )

    def archive_model(self, job_id: str) -> None:
        """The archived model files of a past job, which the controller puts back after a cancelled training."""
        from nulog.protocol import MODEL_FILE, VOCAB_FILE

        archive = self.root / "store" / "opni-nulog-models-archive" / job_id
        archive.mkdir(parents=True, exist_ok=True)
        (archive / MODEL_FILE).write_bytes(b"\0" * 4096)
        (archive / VOCAB_FILE).write_text("<PAD>\n<UNK>\n<MASK>\n")

    # -- the rounds -------------------------------------------------------------------------------------

    async def references(self) -> dict[str, bytes]:
        """What the controller answers each subject now; the bare responder is set to answer the same."""
        found = {s: (await self.nc.request(s, payload(s), timeout=5)).data for s in SUBJECTS}
        await self.nc.request(BARE_SET, json.dumps({s: v.decode() for s, v in found.items()}).encode(), timeout=5)
        return found

    async def phase(
        self, name: str, *, rounds: int, requests: int, concurrencies: list[int],
        within: Callable[[], Awaitable[bool]] | None = None, renew: Callable[[], Awaitable[None]] | None = None,
    ) -> Phase:
        """`rounds` rounds; with `within`, a round counts only if `within()` holds before and after it, and
        `renew()` brings the phase's condition back when it no longer holds."""
        result = Phase(name)
        expect = await self.references()
        result.replies = {s: len(v) for s, v in expect.items()}
        for s in SUBJECTS:  # warm-up, not counted
            for side in ("controller", "bare"):
                await ask(self.nc, target(s, side), payload(s), concurrency=50, requests=500, expect=None, pid=self.pid(side))
        done = 0
        while done < rounds:
            if within is not None and not await within():
                assert renew is not None
                await renew()
                expect = await self.references()
                continue
            order = ("controller", "bare") if done % 2 == 0 else ("bare", "controller")
            runs: dict[tuple[str, int, str], Run] = {}
            for s in SUBJECTS:
                for c in concurrencies:
                    for side in order:
                        runs[s, c, side] = await ask(
                            self.nc, target(s, side), payload(s), concurrency=c, requests=requests, expect=expect[s],
                            pid=self.pid(side),
                        )
            if within is not None and not await within():
                result.discarded += 1
                continue
            for key, run in runs.items():
                result.runs.setdefault(key, []).append(run)
            done += 1
            print(f"  {name}: round {done}/{rounds}", file=sys.stderr, flush=True)
        return result


    def pid(self, side: str) -> int:
        process = self.controller.process if side == "controller" else self.bare
        assert process is not None
        return process.pid


def target(subject: str, side: str) -> str:
    return subject if side == "controller" else BARE_PREFIX + subject


def payload(subject: str) -> bytes:
    if subject == "training_status":
        return json.dumps({"job_id": EXISTING_JOB}).encode()
    if subject == "gpu_service_inference":
        return INFERENCE_PAYLOAD
    return b""


async def healthz_lag(port: int, stop: asyncio.Event, every: float = 0.005) -> list[float]:
    """Round trips of GET /healthz, one every `every` seconds, until `stop` is set."""
    import aiohttp

    rtts: list[float] = []
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                await response.read()
            rtts.append(time.perf_counter() - started)
            await asyncio.sleep(max(0.0, every - (time.perf_counter() - started)))
    return rtts


async def timed_lag(port: int, seconds: float) -> list[float]:
    stop = asyncio.Event()
    probe = asyncio.create_task(healthz_lag(port, stop))
    await asyncio.sleep(seconds)
    stop.set()
    return await probe


# -- the bench ---------------------------------------------------------------------------------------------


TICKS = os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent, CPU ticks of it and of its children it waited for, command line) of every process."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):  # a process that ended meanwhile
            text = stat.read_text()
            fields = text.rsplit(")", 1)[1].split()
            args = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            args = args or f"[{text[text.index('(') + 1:text.rindex(')')]}]"  # a kernel thread: its name
            found[int(stat.parent.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]), args)
    return found


def busy_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the machine so far, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


def machine() -> dict[str, Any]:
    """What the machine is doing now: the load average, and counters to tell later what ran meanwhile."""
    return {"load_average": [round(x, 2) for x in os.getloadavg()], "processes": processes(), "ticks": busy_ticks()}


def meanwhile(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The machine's CPU use between two `machine()` readings: all of it, this bench's share (this process
    and everything it started), and the other processes that used the most."""
    busy = after["ticks"][0] - before["ticks"][0]
    total = after["ticks"][1] - before["ticks"][1]
    procs = after["processes"]
    mine = {os.getpid()}
    while grown := {pid for pid, (parent, _, _) in procs.items() if parent in mine and pid not in mine}:
        mine |= grown
    used = []
    for pid, (_, ticks, args) in procs.items():
        earlier = before["processes"].get(pid)
        spent = ticks - (earlier[1] if earlier and earlier[2] == args else 0)
        used.append((spent, pid, args))
    ours = sum(spent for spent, pid, _ in used if pid in mine)
    others = sorted(((spent, pid, args) for spent, pid, args in used if pid not in mine and spent > 0), reverse=True)
    return {
        "load_average": {"before": before["load_average"], "after": after["load_average"]},
        "cpus": os.cpu_count(),
        "busy_percent": round(100 * busy / total, 1) if total else None,
        # Of all CPU time there was (every CPU's), the share this bench's processes used.
        "bench_percent": round(100 * ours / total, 1) if total else None,
        "others": [{"pid": pid, "cpu_s": round(spent / TICKS, 1), "command": args[:150]} for spent, pid, args in others[:6]],
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from bench.export_rate import _lag_summary
    from training_controller.core.jobs import JobRecord

    before = machine()
    report: dict[str, Any] = {"phases": [], "startup": {}}
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    phases = set(args.phases.split(","))
    kw = {"rounds": args.rounds, "requests": args.requests, "concurrencies": concurrencies}
    logs = cached_logs(Path(args.cache), args.documents)
    with tempfile.TemporaryDirectory(prefix="bench-control-plane-") as tmp:
        rig = Rig(Path(tmp), logs, epochs=args.epochs, max_lines=args.max_lines)
        await rig.start()
        try:
            await seed(rig.nats_server.url, 1)
            rig.archive_model(EXISTING_JOB)
            report["startup"]["1 record"] = {"seconds": round(await rig.start_controller(), 3), **rig.startup_breakdown()}
            await rig.wait_job(EXISTING_JOB, lambda r: True, what="answered")

            if "idle" in phases:
                idle = await rig.phase("idle", **kw)
                idle.note = f"/healthz round trip with nothing else asked: {_lag_summary(await timed_lag(rig.controller.http_port, 5.0))} ms"
                report["phases"].append(idle)

            if "training" in phases:
                job = await rig.submit(3)
                await rig.wait_job(job, lambda r: r["phase"] == "running" and r["progress"] is not None, what="training")

                async def training() -> bool:
                    return (await rig.job(job))["phase"] == "running"

                async def no_training() -> None:
                    raise RuntimeError(f"the training ended before the rounds did; raise --epochs: {await rig.job(job)}")

                trained = await rig.phase("training", within=training, renew=no_training, **kw)
                record = await rig.job(job)
                trained.note = f"training {job}: epoch {record['progress']['epoch']}/{record['progress']['epochs']} at the end"
                await rig.cancel(job)
                report["phases"].append(trained)

            if "exporting" in phases:
                exports = 0

                async def export() -> str:
                    nonlocal exports
                    exports += 1
                    job = await rig.submit(24 * 60 * 60, offset_ns=exports, end_ns=END_NS + 1)
                    await rig.wait_job(job, lambda r: r["phase"] != "queued", what="exporting", timeout=120)
                    return job

                # One export with nothing asked meanwhile: its rate, and the controller's lag seen from outside.
                job = await export()
                stop = asyncio.Event()
                probe = asyncio.create_task(healthz_lag(rig.controller.http_port, stop))
                record = await rig.wait_job(job, lambda r: r["phase"] != "exporting", what="past its export", timeout=1800)
                stop.set()
                rtts = await probe
                record.pop("queue_position", None)
                rate = JobRecord.model_validate(record).export_rate()
                report["export"] = {
                    "job": job, "documents": record["log_count"], "phase_after": record["phase"],
                    "message": record["message"], "documents_per_s": round(rate) if rate else None,
                    "healthz_rtt_ms": _lag_summary(rtts),
                }
                await rig.cancel(job)

                current = [await export()]

                async def exporting() -> bool:
                    return (await rig.job(current[0]))["phase"] == "exporting"

                async def next_export() -> None:
                    await rig.cancel(current[0])
                    current[0] = await export()

                exported = await rig.phase("exporting", within=exporting, renew=next_export, **kw)
                exported.note = f"{exports - 1} export(s) of 1M documents ran under the rounds"
                await rig.cancel(current[0])
                report["phases"].append(exported)

            if "records" in phases:
                rig.controller.stop()
                await seed(rig.nats_server.url, args.records - 1, first=1)
                starts = []
                for i in range(args.starts):
                    if i:
                        rig.controller.stop()
                    seconds = await rig.start_controller()
                    starts.append({"seconds": round(seconds, 3), **rig.startup_breakdown()})
                report["startup"][f"{args.records} records"] = {
                    "seconds": statistics.median(s["seconds"] for s in starts), "starts": starts,
                }
                records = await rig.phase("records", **kw)
                records.note = f"{starts[-1].get('records')} job records loaded"
                report["phases"].append(records)
        finally:
            await rig.close()
            report["meanwhile"] = meanwhile(before, machine())
    return report


def summary(phase: Phase) -> list[dict[str, Any]]:
    rows = []
    for (subject, c, side), runs in phase.runs.items():
        if side != "controller":
            continue
        bare = phase.runs[subject, c, "bare"]
        keys = ("p50_ms", "p99_ms", "max_ms", "rps", "cpu_us")
        med = {k: statistics.median(getattr(r, k) for r in runs) for k in keys}
        bmed = {k: statistics.median(getattr(r, k) for r in bare) for k in keys}
        per_round = [a.p99_ms / b.p99_ms for a, b in zip(runs, bare, strict=True)]
        rows.append({
            "phase": phase.name, "subject": subject, "concurrency": c, "reply_bytes": phase.replies[subject],
            "controller": {k: round(v, 3) for k, v in med.items()}, "bare": {k: round(v, 3) for k, v in bmed.items()},
            "p99_ratio": round(statistics.median(per_round), 2),
            "p99_ratio_rounds": {
                "min": round(min(per_round), 2), "max": round(max(per_round), 2),
                "over_target": sum(r > TARGET_P99 for r in per_round),
            },
            "rps_ratio": round(statistics.median(a.rps / b.rps for a, b in zip(runs, bare, strict=True)), 2),
            "wrong": sum(r.wrong for r in runs) + sum(r.wrong for r in bare),
            "rounds": len(runs),
        })
    return rows


def print_report(report: dict[str, Any], command: str) -> None:
    head = (f"{'phase':<10} {'subject':<22} {'c':>3} {'bytes':>5}  {'controller p50/p99/max ms':>26} {'rps':>6}  "
            f"{'bare p50/p99/max ms':>22} {'rps':>6}  {'p99 x':>5} {'rps x':>5}  {'CPU us/req':>11}  "
            f"{'p99 x of rounds':>16}")
    print(head)
    missed = []
    for row in report["rows"]:
        c, b, r = row["controller"], row["bare"], row["p99_ratio_rounds"]
        mark = ""
        if row["concurrency"] >= 50 and (row["p99_ratio"] > TARGET_P99 or row["rps_ratio"] < TARGET_RPS):
            mark = "  <- target missed"
            missed.append(f"{row['phase']}/{row['subject']}/c{row['concurrency']}")
        if row["wrong"]:
            mark += f"  ({row['wrong']} wrong replies)"
        print(
            f"{row['phase']:<10} {row['subject']:<22} {row['concurrency']:>3} {row['reply_bytes']:>5}  "
            f"{c['p50_ms']:>8.2f} /{c['p99_ms']:>7.2f} /{c['max_ms']:>7.1f} {c['rps']:>6.0f}  "
            f"{b['p50_ms']:>6.2f} /{b['p99_ms']:>6.2f} /{b['max_ms']:>6.1f} {b['rps']:>6.0f}  "
            f"{row['p99_ratio']:>5.2f} {row['rps_ratio']:>5.2f}  {c['cpu_us']:>5.1f}/{b['cpu_us']:<5.1f}  "
            f"{r['min']:>5.2f}-{r['max']:<5.2f} {r['over_target']:>2}/{row['rounds']}{mark}"
        )
    for note in report["notes"]:
        print(note)
    for name, s in report["startup"].items():
        flag = "" if name == "1 record" or s["seconds"] < TARGET_STARTUP_S else "  <- target missed"
        detail = "; ".join(
            f"{x['seconds']:.2f}s (records loaded at {x.get('records loaded', float('nan')):.2f}s, "
            f"{x['cpu_seconds']:.2f} CPU-s)" for x in s.get("starts", [s])
        )
        print(f"start-up with {name}: {s['seconds']:.3f}s to the first answer (median; {detail}){flag}")
    if "export" in report:
        e = report["export"]
        lag = e["healthz_rtt_ms"]
        print(
            f"export of {e['documents']:,} documents (files source, process exporter, nothing asked meanwhile): "
            f"{e['documents_per_s']:,} documents/s; /healthz round trip meanwhile p50 {lag['p50']:.2f} ms, "
            f"p99 {lag['p99']:.2f} ms, max {lag['max']:.1f} ms ({lag['ticks']} probes)"
        )
    m = report["meanwhile"]
    print(
        f"meanwhile: load average {m['load_average']['before']} before, {m['load_average']['after']} after, on "
        f"{m['cpus']} CPUs, busy {m['busy_percent']}% of the time, this bench's processes {m['bench_percent']}%; "
        "the other processes that used the most CPU:"
    )
    print("\n".join(f"    {o['cpu_s']:7.1f} CPU-s  pid {o['pid']}: {o['command']}" for o in m["others"]))
    print("CPU us/req: CPU time of the controller's process / the bare responder's per request (all threads)")
    print(f"p99 x of rounds: the least and the greatest of the rounds' p99 ratios, and how many were over "
          f"{TARGET_P99}x (the p99 x column is their median)")
    print("targets (c >= 50): p99 <= 1.5x bare, throughput >= 0.7x bare; start-up with 10k records < 1 s: "
          + ("all met" if not missed and all(s["seconds"] < TARGET_STARTUP_S for n, s in report["startup"].items() if n != "1 record") else f"missed: {', '.join(missed) or 'start-up'}"))
    print(f"reproduce: {command}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved controller/bare rounds per phase (their median steadies the 2-core machine's noise; see the module's doc)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per subject, concurrency and side")
    parser.add_argument("--concurrency", default="1,50,200")
    parser.add_argument("--phases", default="idle,training,exporting,records")
    parser.add_argument("--records", type=int, default=10_000, help="past job records of the last phase")
    parser.add_argument("--starts", type=int, default=3, help="start-ups measured with those records")
    parser.add_argument("--documents", type=int, default=1_000_000, help="documents of the export")
    parser.add_argument("--epochs", type=int, default=300, help="TRAIN_EPOCHS of the training phase")
    parser.add_argument("--max-lines", type=int, default=2000, help="TRAIN_MAX_LINES of the trainings")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "control-plane-bench"),
                        help="where the sample logs are kept between runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--bare", metavar="URL", help=argparse.SUPPRESS)  # the bare responder's process
    args = parser.parse_args(argv)
    if args.bare:
        asyncio.run(bare_responder(args.bare))
        return 0
    report = asyncio.run(bench(args))
    phases: list[Phase] = report.pop("phases")
    report["rows"] = [row for p in phases for row in summary(p)]
    report["notes"] = [f"{p.name}: {p.note}" + (f"; {p.discarded} round(s) discarded" if p.discarded else "") for p in phases]
    command = shlex.join(["python", "-m", "bench.control_plane", *(argv if argv is not None else sys.argv[1:])])
    report["command"] = command
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(json.dumps(report))  # the first line, for bench/__main__.py
        print_report(report, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
