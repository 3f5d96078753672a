"""NuLog's grouping accuracy on LogHub samples: `nulog parse` with each dataset's published settings, scored by
LogHub's evaluator. Each figure comes from the exact shell command printed beside it, so anyone can re-run
one number alone. Data: `<repo>/../shared/data/loghub`, or the folder named by LOGHUB_DIR.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = ("HDFS", "BGL", "Apache", "HealthApp")
# GA the issue asks for (the NuLog paper's figures, a little below).
TARGETS = {"HDFS": 0.9965, "BGL": 0.9785, "Apache": 1.0, "HealthApp": 0.8765}


def loghub_dir() -> Path:
    return Path(os.environ.get("LOGHUB_DIR", SHARED / "data" / "loghub"))


def eval_tool() -> Path:
    """The scorer: LOGHUB_EVAL, else the shared folder's tools/, which is also the one beside LOGHUB_DIR's
    data (`<shared>/data/loghub`) when that is set."""
    if "LOGHUB_EVAL" in os.environ:
        return Path(os.environ["LOGHUB_EVAL"])
    shared = loghub_dir().parent.parent if "LOGHUB_DIR" in os.environ else SHARED
    return shared / "tools" / "loghub_eval.py"


def contents(data: Path, settings: dict) -> list[str]:
    """The Content field of every line of a dataset's log file."""
    from nulog.parse import read_raw_lines, split_fields

    _, rows = split_fields(read_raw_lines(data / settings["log_file"]), settings["log_format"])
    return [r["Content"] for r in rows]


def parse_command(data: Path, settings: dict, out: Path, *, seed: int, device: str) -> list[str]:
    """The `nulog parse` command line for one dataset with its published settings."""
    return [
        sys.executable, "-m", "nulog", "parse", str(data / settings["log_file"]),
        "--log-format", settings["log_format"],
        "--filters", settings["filters"],
        "--k", str(settings["k"]),
        "--epochs", str(settings["nr_epochs"]),
        "--seed", str(seed),
        "--device", device,
        "--output", str(out),
    ]


def accuracy(data: Path, settings: dict, names: list[str], *, seed: int, device: str, out_dir: Path) -> list[dict]:
    """Run `nulog parse` and the LogHub evaluator on each dataset; returns one row per dataset."""
    from bench.speed import run_command

    rows = []
    for name in names:
        s = settings[name]
        out = out_dir / f"{name}_structured.csv"
        parse = parse_command(data, s, out, seed=seed, device=device)
        truth = data / name / f"{Path(s['log_file']).name}_structured.csv"
        evaluate = [sys.executable, str(eval_tool()), str(truth), str(out), "--json"]
        t0 = time.perf_counter()
        try:
            seconds, rss, _ = run_command(parse)
        except RuntimeError as e:
            rows.append({"dataset": name, "error": str(e)[-300:], "command": shlex.join(parse)})
            continue
        seconds = time.perf_counter() - t0
        scores = json.loads(subprocess.run(evaluate, capture_output=True, text=True, check=True).stdout)
        command = shlex.join(parse) + " && " + shlex.join(evaluate[:-1])
        rows.append({"dataset": name, **scores, "target_GA": TARGETS.get(name), "parse_s": seconds,
                     "peak_rss_mib": rss, "command": command})
    return rows


def print_accuracy(rows: list[dict]) -> None:
    print(f"{'dataset':<10} {'GA':>7} {'target':>7} {'F1':>7} {'groups':>11} {'parse s':>8} {'RSS MiB':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['dataset']:<10} failed: {r['error']}")
            continue
        ok = "ok" if r["target_GA"] is None or r["GA"] >= r["target_GA"] else "BELOW"
        groups = f"{r['groups_parsed']}/{r['groups_truth']}"
        print(f"{r['dataset']:<10} {r['GA']:>7.4f} {r['target_GA'] or 0:>7.4f} {r['F1']:>7.4f} {groups:>11} "
              f"{r['parse_s']:>8.1f} {r['peak_rss_mib']:>8,.0f}  {ok}")
    print("\ncommands:")
    for r in rows:
        print(f"  {r['dataset']}: {r['command']}")
