"""`python -m bench`: NuLog's speed beside Drain3's (`bench/speed.py`), the training job's throughput on one and
two workers (`bench/ddp.py`), its grouping accuracy on four LogHub samples (`bench/loghub.py`), the controller's
export rate through the Elasticsearch adapter (`bench/export_rate.py`), and its request/reply answers beside a
bare nats-py responder's while idle, training, exporting and with 10,000 past records, with its start-up time
(`bench/control_plane.py`).

Accuracy and speed are measured here, not in the test suite, because they take minutes and depend on the
machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.ddp import ddp, print_ddp
from bench.loghub import DATASETS, REPO, accuracy, eval_tool, loghub_dir, print_accuracy
from bench.speed import print_speed, sample_lines, speed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated LogHub datasets")
    p.add_argument("--sizes", default="100000,1000000", help="sample-log workloads, in lines")
    p.add_argument("--rounds", type=int, default=5, help="interleaved NuLog/Drain3 rounds per workload (3 at most on 1M)")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "nulog-bench"),
                   help="where the generated workload files are kept between runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-ddp", action="store_true", help="skip the training throughput on 1 and 2 workers")
    p.add_argument("--ddp-lines", type=int, default=100_000, help="sample-log lines the workers train on")
    p.add_argument("--ddp-rounds", type=int, default=2)
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--skip-export", action="store_true")
    p.add_argument("--skip-control-plane", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--keep", default=None, help="write the structured CSVs here instead of a temporary folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    data = loghub_dir()
    settings_path = data / "settings.json"
    if not settings_path.is_file():
        print(f"no LogHub data at {data} (set LOGHUB_DIR)", file=sys.stderr)
        return 2
    if not args.skip_accuracy and not eval_tool().is_file():
        print(f"no LogHub scorer at {eval_tool()} (set LOGHUB_EVAL)", file=sys.stderr)
        return 2
    settings = json.loads(settings_path.read_text())
    names = [n for n in args.datasets.split(",") if n]
    report: dict = {"data": str(data)}

    if not args.skip_speed:
        sizes = [int(n) for n in args.sizes.split(",") if n]
        report["speed"] = speed(data, settings, sizes=sizes, rounds=args.rounds, cache=Path(args.cache))
        if not args.json:
            print_speed(report["speed"])

    if not args.skip_ddp:
        cache = Path(args.cache)
        cache.mkdir(parents=True, exist_ok=True)
        report["ddp"] = ddp(sample_lines(args.ddp_lines, cache), device=args.device if args.device != "auto" else "cpu",
                            rounds=args.ddp_rounds)
        if not args.json:
            print_ddp(report["ddp"])

    if not args.skip_accuracy:
        with tempfile.TemporaryDirectory() as tmp:
            out_dir = Path(args.keep or tmp)
            out_dir.mkdir(parents=True, exist_ok=True)
            report["accuracy"] = accuracy(data, settings, names, seed=args.seed, device=args.device, out_dir=out_dir)
        if not args.json:
            print_accuracy(report["accuracy"])
    # Each in processes of its own, so that its peak memory is its own: the exporter; the controller, the bare
    # responder and the client that asks them.
    parts = (
        ("export", "bench.export_rate", args.skip_export,
         "export through the Elasticsearch adapter (fake server in its own process)"),
        ("control_plane", "bench.control_plane", args.skip_control_plane,
         "control plane: the controller's request/reply answers beside a bare nats-py responder's"),
    )
    for key, module, skip, title in parts:
        if not skip:
            report[key] = _run_part(module, title, quiet=args.json)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def _run_part(module: str, title: str, *, quiet: bool) -> dict | None:
    """Run `python -m module`: its first line of output is its report as JSON, the rest its tables."""
    proc = subprocess.run([sys.executable, "-m", module], cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"{module} failed: {proc.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    first, *human = proc.stdout.strip().splitlines()
    if not quiet:
        print(f"\n{title}")
        print("\n".join(f"  {line}" for line in human))
    return json.loads(first)


if __name__ == "__main__":
    sys.exit(main())
