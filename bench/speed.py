"""NuLog's speed against Drain3's on the same lines, and the cost of each `nulog` command.

Three workloads: LogHub's HDFS 2k repeated 50 times, and 100k and 1M lines of the sample logs the demo uses
(`training_controller.demo.samples`), masked by the controller's own `mask` as the export does. For each, a
model is trained by `nulog train` (its seconds and masked tokens/s), then NuLog's prediction pipeline and
Drain3's `add_log_message` run on the same lines in one process, in interleaved rounds, each round from a
cold start (a new predictor, a new template miner), one core's worth of Python each; the median round
counts. Last, `nulog templates` and `nulog score` run as commands on the workload's file, for their wall
time and peak RSS (each its own process's, see `bench/peak.py`).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.loghub import REPO, contents

SAMPLE_RATE_PER_S = 2.0  # lines per second of the sample logs: about 7,200 an hour
SAMPLE_END_NS = 1_700_000_000_000_000_000  # a fixed end, so every run writes the same lines


def sample_lines(n: int, cache: Path, *, seed: int = 0) -> Path:
    """A text file of the first n masked sample-log lines (written once, then reused)."""
    from training_controller.core.masking import mask
    from training_controller.demo.samples import iter_documents, write_sample_logs

    path = cache / f"sample-{n}-{seed}.txt"
    if path.is_file():
        return path
    hours = n / (SAMPLE_RATE_PER_S * 3600) * 1.1 + 1
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        docs = iter_documents(write_sample_logs(Path(tmp), hours=hours, end_ns=SAMPLE_END_NS, seed=seed))
        with open(path.with_suffix(".tmp"), "w", encoding="utf-8") as f:
            for i, doc in enumerate(docs):
                if i == n:
                    break
                f.write(mask(doc["log"]).replace("\n", " ") + "\n")
    path.with_suffix(".tmp").rename(path)
    return path


def hdfs_lines(data: Path, settings: dict, cache: Path, *, times: int = 50) -> Path:
    path = cache / f"hdfs-x{times}.txt"
    if not path.is_file():
        lines = contents(data, settings["HDFS"])
        path.write_text("".join(line + "\n" for line in lines) * times, encoding="utf-8")
    return path


def run_command(args: list[str]) -> tuple[float, float, str]:
    """Run `python -m MODULE ...` alone, stdout discarded; (wall seconds, peak RSS MiB of that process as
    `bench.peak` reads it, stderr)."""
    assert args[:2] == [sys.executable, "-m"], args
    with tempfile.TemporaryDirectory() as tmp:
        peak = Path(tmp) / "peak"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.peak", str(peak), *args[2:]], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[2:5])} failed: {proc.stderr.strip()[-800:]}")
        return seconds, float(peak.read_text()), proc.stderr


def _nulog_round(model: Path, lines: list[str]) -> tuple[float, float]:
    import torch

    from nulog.checkpoint import load_checkpoint
    from nulog.predict import Predictor

    torch.set_num_threads(1)  # as `nulog templates` and `nulog score` run by default, and Drain3 on one core
    ckpt = load_checkpoint(model)
    t0, c0 = time.perf_counter(), time.process_time()
    predictor = Predictor(ckpt.model, ckpt.encoder, ckpt.parse)
    for _ in predictor.stream(lines):
        pass
    return time.perf_counter() - t0, time.process_time() - c0


def _drain_round(lines: list[str]) -> tuple[float, float]:
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    t0, c0 = time.perf_counter(), time.process_time()
    miner = TemplateMiner(config=TemplateMinerConfig())
    for line in lines:
        miner.add_log_message(line)
    return time.perf_counter() - t0, time.process_time() - c0


def agrees_with_line_by_line(model: Path, lines: list[str]) -> bool:
    """The grouped pipeline gives the same templates and scores as one model pass per line."""
    from nulog.checkpoint import load_checkpoint
    from nulog.predict import Predictor

    ckpt = load_checkpoint(model)
    make = lambda: Predictor(ckpt.model, ckpt.encoder, ckpt.parse)  # noqa: E731
    return make().predict(lines) == make().predict(lines, grouped=False)


def workload(name: str, path: Path, train_args: list[str], out: Path, *, rounds: int) -> dict:
    """Train on the file, then time NuLog and Drain3 on its lines, and the two commands."""
    nulog = [sys.executable, "-m", "nulog"]
    model_dir = out / f"model-{name}"
    train_s, train_rss, stderr = run_command([*nulog, "train", str(path), "--output", str(model_dir),
                                              "--device", "cpu", *train_args])
    m = re.search(r"trained (\d+) steps in ([\d.]+) s, ([\d.]+) masked tokens/s, (\d+) id sequences", stderr)
    assert m, f"no training summary in: {stderr[-500:]}"
    model = model_dir / "nulog_model_latest.pt"
    lines = path.read_text(encoding="utf-8").splitlines()
    nulog_s, drain_s = [], []
    for _ in range(rounds):  # interleaved, so both see the same load on a shared machine
        nulog_s.append(_nulog_round(model, lines))
        drain_s.append(_drain_round(lines))
    (nulog_wall, nulog_cpu), (drain_wall, drain_cpu) = ([statistics.median(x) for x in zip(*s, strict=True)]
                                                        for s in (nulog_s, drain_s))
    commands = {}
    for command in ("templates", "score"):
        seconds, rss, _ = run_command([*nulog, command, "--model", str(model), str(path)])
        commands[command] = {"seconds": seconds, "lines_per_s": len(lines) / seconds, "peak_rss_mib": rss}
    nulog_rate, drain_rate = len(lines) / nulog_wall, len(lines) / drain_wall
    return {
        "workload": name,
        "lines": len(lines),
        "distinct_lines": len(set(lines)),
        "id_sequences": int(m[4]),
        "nulog_lines_per_s": nulog_rate,
        "drain3_lines_per_s": drain_rate,
        "ratio": nulog_rate / drain_rate,
        "cpu_ratio": drain_cpu / nulog_cpu,  # the same from process CPU time, less swayed by other work
        "rounds": rounds,
        "agrees_with_line_by_line": agrees_with_line_by_line(model, lines[:2000]),
        "train": {"seconds": float(m[2]), "steps": int(m[1]), "masked_tokens_per_s": float(m[3]),
                  "command_seconds": train_s, "peak_rss_mib": train_rss},
        "commands": commands,
    }


def speed(data: Path, settings: dict, *, sizes: list[int], rounds: int, cache: Path) -> list[dict]:
    cache.mkdir(parents=True, exist_ok=True)
    s = settings["HDFS"]
    hdfs_args = ["--filters", s["filters"], "--k", str(s["k"]), "--epochs", str(s["nr_epochs"])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(workload("HDFS 2k x50", hdfs_lines(data, settings, cache), hdfs_args, Path(tmp), rounds=rounds))
        for n in sizes:
            rows.append(workload(f"sample logs {n // 1000}k", sample_lines(n, cache), [], Path(tmp),
                                 rounds=rounds if n <= 200_000 else min(rounds, 3)))
    return rows


def print_speed(rows: list[dict]) -> None:
    print("NuLog inference (one torch thread, cold caches) against Drain3 0.9 add_log_message, the same masked")
    print("lines in the same process, median of interleaved rounds; ratio from wall time, cpu ratio from CPU time")
    print(f"{'workload':<18} {'lines':>9} {'distinct':>9} {'id seqs':>7} {'NuLog/s':>10} {'Drain3/s':>10} {'ratio':>6}"
          f" {'cpu ratio':>9} {'rounds':>6} {'same as 1-by-1':>14}")
    for r in rows:
        print(f"{r['workload']:<18} {r['lines']:>9,} {r['distinct_lines']:>9,} {r['id_sequences']:>7,} "
              f"{r['nulog_lines_per_s']:>10,.0f} {r['drain3_lines_per_s']:>10,.0f} {r['ratio']:>6.2f} "
              f"{r['cpu_ratio']:>9.2f} {r['rounds']:>6} {'yes' if r['agrees_with_line_by_line'] else 'NO':>14}")
    print("\ncommands (wall time includes start-up and reading/writing files; peak RSS of that process alone)")
    print(f"{'workload':<18} {'train s':>8} {'steps':>6} {'tokens/s':>9} {'RSS MiB':>8} | {'templates/s':>11} "
          f"{'RSS MiB':>8} | {'score/s':>9} {'RSS MiB':>8}")
    for r in rows:
        t, c = r["train"], r["commands"]
        print(f"{r['workload']:<18} {t['seconds']:>8.1f} {t['steps']:>6} {t['masked_tokens_per_s']:>9,.0f} "
              f"{t['peak_rss_mib']:>8,.0f} | {c['templates']['lines_per_s']:>11,.0f} "
              f"{c['templates']['peak_rss_mib']:>8,.0f} | {c['score']['lines_per_s']:>9,.0f} "
              f"{c['score']['peak_rss_mib']:>8,.0f}")
    print(flush=True)


if __name__ == "__main__":  # python -m bench.speed: this section alone, as JSON
    from bench.loghub import loghub_dir

    data = loghub_dir()
    found = speed(data, json.loads((data / "settings.json").read_text()), sizes=[100_000], rounds=1,
                  cache=Path(tempfile.gettempdir()) / "nulog-bench")
    print(json.dumps(found, indent=2))
