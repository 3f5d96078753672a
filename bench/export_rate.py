"""`python -m bench.export_rate`: the export's rate, and how late the controller's event loop wakes meanwhile.

An export runs before every training and holds a GPU slot back, and it must not slow the controller's
answers. So this exports 1M documents through the Elasticsearch adapter (from the contract tests' local
wire-format server, `tests/contract/search_server.py`, in a process of its own) and through the files
source (time-ordered JSONL files written beforehand by another process), each with the process-based
exporter the service uses, into the local object store. The documents carry the sample logs' lines (web,
Postgres, Kubernetes, Java), 160 characters on average.

While an export runs, a timer in this (the controller's) process asks to wake every 5 ms; its lateness is
the event-loop lag, also measured with no export running (`baseline`), which shows what the machine's other
load alone does to it. Peak RSS is VmHWM from /proc: this process's (reset before each export), the export
worker's and its masking process's, which the worker reports at its end. The search server stands in for a
cluster on other machines, so it runs, like the export worker, only when the CPU has nothing else to do. The load average before and
after says how busy the machine was. `--in-process` adds the in-process exporter for comparison. Real
clusters add their own search time; this measures our side.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
START_NS = 1_617_037_200 * 10**9  # 2021-03-29 17:00 UTC
STEP_NS = 1_000_000  # one document a millisecond
TICK_S = 0.005
FILE_DOCUMENTS = 100_000  # one file a 100 s of logs, as a rotated log would be


def write_files(directory: Path, documents: int) -> None:
    """The documents the search server serves, as JSONL files in time order (run in a process of its own)."""
    from tests.contract.search_corpus import SyntheticCorpus

    corpus = SyntheticCorpus(documents, start_ns=START_NS, step_ns=STEP_NS)
    directory.mkdir(parents=True, exist_ok=True)
    for first in range(0, documents, FILE_DOCUMENTS):
        with (directory / f"logs-{first // FILE_DOCUMENTS:04d}.jsonl").open("w") as f:
            for i in range(first, min(first + FILE_DOCUMENTS, documents)):
                doc = {"timestamp": START_NS + i * STEP_NS, **corpus.pool[i % len(corpus.pool)]}
                f.write(json.dumps(doc, separators=(",", ":")) + "\n")


def reset_peak_rss() -> None:
    """Start this process's VmHWM over from its current RSS (Linux: 5 > /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


class _WorkerCost(logging.Handler):
    """Catches what the process exporter logs about its worker: peak memory and CPU time."""

    FIELDS = ("worker_peak_rss_kib", "masking_peak_rss_kib", "worker_cpu_seconds")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.cost: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.cost.update({name: getattr(record, name) for name in self.FIELDS if hasattr(record, name)})


def _mb(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def _lag_summary(lags: list[float]) -> dict[str, float]:
    lags_ms = sorted(lag * 1000 for lag in lags)
    return {
        "p50": round(statistics.median(lags_ms), 2),
        "p99": round(lags_ms[min(len(lags_ms) - 1, int(0.99 * len(lags_ms)))], 2),
        "max": round(lags_ms[-1], 2),
        "ticks": len(lags_ms),
    }


async def _ticks(lags: list[float], stop: asyncio.Event) -> None:
    """Asks to wake every TICK_S; records how late each wake-up comes."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + TICK_S
        await asyncio.sleep(TICK_S)
        lags.append(loop.time() - due)


async def baseline(seconds: float) -> dict[str, float]:
    """The event-loop lag with no export running: what the rest of the machine's load does to it."""
    lags: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticks(lags, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await ticker
    return _lag_summary(lags)


async def measure(run: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """Runs the export while a timer ticks in this event loop; returns the rate, the lag and memory."""
    lags: list[float] = []
    stop = asyncio.Event()

    worker = _WorkerCost()
    exporter_log = logging.getLogger("training_controller.adapters.export.process")
    exporter_log.setLevel(logging.INFO)  # the worker's cost is logged at INFO
    exporter_log.addHandler(worker)
    cpu = time.process_time()
    reset_peak_rss()
    ticker = asyncio.create_task(_ticks(lags, stop))
    started = time.perf_counter()
    try:
        result = await run()
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        await ticker
        cpu = time.process_time() - cpu
        exporter_log.removeHandler(worker)
    return {
        "documents": result.count,
        "windows": result.windows,
        "seconds": round(seconds, 2),
        "documents_per_s": round(result.count / seconds),
        "lag_ms": _lag_summary(lags),
        "parent_peak_rss_mb": round(peak_rss_mb(), 1),
        "worker_peak_rss_mb": _mb(worker.cost.get("worker_peak_rss_kib")),
        "masking_peak_rss_mb": _mb(worker.cost.get("masking_peak_rss_kib")),
        # Apart from the wall-clock rate, which a busy machine lowers: the CPU time the export cost.
        "cpu_seconds": round(worker.cost.get("worker_cpu_seconds", cpu), 1),
        "parent_cpu_seconds": round(cpu, 1),
    }


async def export_all(args: argparse.Namespace, url: str | None, files: Path | None) -> list[dict[str, Any]]:
    """A baseline row, then one row a source and exporter."""
    from training_controller.adapters.export.process import ProcessExporter
    from training_controller.adapters.logs.elasticsearch import ElasticsearchLogSource
    from training_controller.adapters.logs.files import FilesLogSource
    from training_controller.adapters.storage.local import LocalObjectStore
    from training_controller.core.export import InProcessExporter
    from training_controller.core.queries import Interval, LogQuery

    query = LogQuery(intervals=(Interval(start_ns=START_NS, end_ns=START_NS + args.documents * STEP_NS),))
    rows: list[dict[str, Any]] = [{"source": None, "exporter": None, "lag_ms": await baseline(5.0)}]
    with tempfile.TemporaryDirectory(prefix="bench-export-") as root:
        store = functools.partial(LocalObjectStore, Path(root))
        sources: list[tuple[str, Callable[[], Any]]] = []
        if url is not None:
            sources.append(("elasticsearch", functools.partial(ElasticsearchLogSource, url, page_size=args.page_size)))
        if files is not None:
            sources.append(("files", functools.partial(FilesLogSource, files)))
        for name, source in sources:
            kinds: list[tuple[str, Any]] = [("process", ProcessExporter(source, store))]
            if args.in_process:
                kinds.append(("in-process", None))
            for kind, exporter in kinds:
                if exporter is None:
                    built = source()
                    exporter = InProcessExporter(built, store())
                else:
                    built = None
                run = functools.partial(
                    exporter.export, query, job_id=f"{name}-{kind}", bucket="training-logs", window_seconds=60
                )
                try:
                    rows.append({"source": name, "exporter": kind, **await measure(run)})
                finally:
                    if built is not None:
                        await built.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--sources", default="elasticsearch,files", help="comma-separated: elasticsearch, files")
    parser.add_argument("--in-process", action="store_true", help="also measure the in-process exporter")
    parser.add_argument("--write-files", type=Path, help=argparse.SUPPRESS)  # the child that writes the files
    args = parser.parse_args(argv)
    if args.write_files:
        write_files(args.write_files, args.documents)
        return 0
    sources = set(args.sources.split(","))

    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        files = Path(logs) if "files" in sources else None
        if files is not None:
            subprocess.run(
                [sys.executable, "-m", "bench.export_rate", "--documents", str(args.documents), "--write-files", logs],
                cwd=REPO,
                check=True,
            )
        server = None
        url = None
        if "elasticsearch" in sources:
            server = subprocess.Popen(
                ["chrt", "--idle", "0", sys.executable, "-m", "tests.contract.search_server",
                 "--documents", str(args.documents), "--start-ns", str(START_NS), "--step-ns", str(STEP_NS)],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,  # scheduled apart from this process, as a cluster elsewhere would be
            )
            assert server.stdout is not None
            url = f"http://127.0.0.1:{server.stdout.readline().split()[1]}"
        load_before = os.getloadavg()
        try:
            rows = asyncio.run(export_all(args, url, files))
        finally:
            if server is not None:
                assert server.stdin is not None
                server.stdin.close()
                server.wait(timeout=10)
    load_after = os.getloadavg()

    command = ["python", "-m", "bench.export_rate", "--documents", str(args.documents), "--page-size",
               str(args.page_size), "--sources", args.sources] + (["--in-process"] if args.in_process else [])
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]}
    print(json.dumps({"rows": rows, "page_size": args.page_size, "load_average": load, "command": shlex.join(command)}))
    base = rows[0]["lag_ms"]
    print(
        f"no export running: controller event-loop lag p50 {base['p50']:.2f} ms, p99 {base['p99']:.2f} ms, "
        f"max {base['max']:.1f} ms"
    )
    for row in rows[1:]:
        lag = row["lag_ms"]
        memory = f"controller {row['parent_peak_rss_mb']:.0f} MB"
        if row["worker_peak_rss_mb"] is not None:
            memory += f", export worker {row['worker_peak_rss_mb']:.0f} MB"
        if row["masking_peak_rss_mb"] is not None:
            memory += f", its masking process {row['masking_peak_rss_mb']:.0f} MB"
        print(
            f"{row['source']} via {row['exporter']} exporter: {row['documents']:,} documents in "
            f"{row['seconds']:.1f}s, {row['documents_per_s']:,} documents/s ({row['cpu_seconds']:.1f} CPU-s of export); "
            f"controller event-loop lag p50 {lag['p50']:.2f} ms, p99 {lag['p99']:.2f} ms, max {lag['max']:.1f} ms; "
            f"peak RSS (VmHWM) {memory}"
        )
    print(f"load average (1, 5, 15 min) before {load['before']}, after {load['after']} on {os.cpu_count()} CPUs")
    print(f"reproduce: {shlex.join(command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
