"""`python -m bench.export_rate`: how fast training data is exported through the Elasticsearch adapter.

The number matters because an export holds a GPU slot back: it runs before every training. The documents
come from the contract tests' fake Elasticsearch (`tests/contract/search_server.py`), in a process of its
own that makes them on the fly, so the peak RSS printed is the exporter's alone: adapter, masking, gzip
and the local object store, exactly the path `export_training_data` takes in the service. Real clusters add
their own search time; this measures our side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_NS = 1_617_037_200 * 10**9  # 2021-03-29 17:00 UTC
STEP_NS = 1_000_000  # one document a millisecond


async def export(url: str, documents: int, page_size: int) -> dict[str, float]:
    from training_controller.adapters.logs.elasticsearch import ElasticsearchLogSource
    from training_controller.adapters.storage.local import LocalObjectStore
    from training_controller.core.export import export_training_data
    from training_controller.core.queries import Interval, LogQuery

    source = ElasticsearchLogSource(url, page_size=page_size)
    query = LogQuery(intervals=(Interval(start_ns=START_NS, end_ns=START_NS + documents * STEP_NS),))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-export-") as root:
            started = time.perf_counter()
            result = await export_training_data(
                query,
                job_id="bench",
                source=source,
                store=LocalObjectStore(Path(root)),
                bucket="training-logs",
            )
            seconds = time.perf_counter() - started
    finally:
        await source.aclose()
    return {"documents": result.count, "windows": result.windows, "seconds": seconds}


def peak_rss_mb() -> float:
    """This process's own peak memory (VmHWM); ru_maxrss would also count pages shared with a forking parent."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export rate through the Elasticsearch adapter.")
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args(argv)

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.contract.search_server",
            "--documents",
            str(args.documents),
            "--start-ns",
            str(START_NS),
            "--step-ns",
            str(STEP_NS),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().split()[1]
        report = asyncio.run(export(f"http://127.0.0.1:{port}", args.documents, args.page_size))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)
    rss_mb = peak_rss_mb()
    rate = report["documents"] / report["seconds"]
    command = shlex.join(
        [
            "python",
            "-m",
            "bench.export_rate",
            "--documents",
            str(args.documents),
            "--page-size",
            str(args.page_size),
        ]
    )
    print(
        json.dumps(
            {
                **report,
                "documents_per_s": round(rate),
                "peak_rss_mb": round(rss_mb, 1),
                "page_size": args.page_size,
            }
        )
    )
    print(
        f"exported {report['documents']:,} documents in {report['seconds']:.1f}s: {rate:,.0f} documents/s, "
        f"peak RSS {rss_mb:.0f} MB (page size {args.page_size})"
    )
    print(f"reproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
