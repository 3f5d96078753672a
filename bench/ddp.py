"""Training throughput of the job (`python -m nulog.job`) on one worker and on several (torch.distributed): masked
tokens trained per second of the optimisation steps, from the job's own metrics.

The workers are plain processes with the rendezvous variables the controller's local launcher sets
(WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), one torch thread each, so N workers use N cores.
Every configuration trains the same steps on the same global batches, so the figures compare directly; the
median of the rounds counts. On CUDA each worker needs a GPU of its own (NCCL), so only as many workers as
there are GPUs are run. The load average is printed beside the figures: on a shared machine a second worker
competes with other work for the second core, and a step waits for the slower rank; so the table also gives
the throughput over one rank's CPU time (every rank does the same work), what the workers would reach with a
free core each.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.loghub import REPO

# (model format, global batch): this project's model at the controller's default batch and at a large one,
# and Opni's architecture at Opni's batch of 32 lines.
CONFIGS = (("nulog", 16), ("nulog", 128), ("opni", 32))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(data: Path, out: Path, *, workers: int, batch_size: int, model_format: str, device: str,
            epochs: int = 1, max_lines: int | None = None) -> dict:
    """Train once on `workers` processes; the job's metrics (rank 0's metrics.json)."""
    port = _free_port()
    argv = [sys.executable, "-m", "nulog.job", "--job-id", "bench", "--data", str(data), "--output", str(out),
            "--device", device, "--epochs", str(epochs), "--batch-size", str(batch_size),
            "--model-format", model_format, *(["--max-lines", str(max_lines)] if max_lines else [])]
    procs = []
    for rank in range(workers):
        env = {**os.environ, "WORLD_SIZE": str(workers), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
    errors = [p.communicate()[1] for p in procs]
    failed = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise RuntimeError(f"training on {workers} workers failed {failed}: {errors[failed[0][0]].strip()[-800:]}")
    return json.loads((out / "metrics.json").read_text())


def ddp(data: Path, *, device: str = "cpu", workers: tuple[int, ...] = (1, 2), rounds: int = 2,
        max_lines: int | None = None) -> dict:
    """Masked tokens/s of each configuration on each worker count, median of interleaved rounds."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device here")
        workers = tuple(w for w in workers if w <= torch.cuda.device_count())
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_format, batch in CONFIGS:
            seen: dict[int, list[dict]] = {w: [] for w in workers}
            for _ in range(rounds):  # interleaved, so each worker count sees the same load
                for w in workers:
                    out = Path(tmp) / f"{model_format}-{batch}-{w}-{time.monotonic_ns()}"
                    seen[w].append(run_job(data, out, workers=w, batch_size=batch, model_format=model_format,
                                           device=device, max_lines=max_lines))
            for w, runs in seen.items():
                rates = [m["tokens_per_s"] for m in runs]
                cpu = statistics.median(m["step_cpu_seconds"] for m in runs)
                rows.append({"model_format": model_format, "batch_size": batch, "workers": w,
                             "steps": runs[0]["steps"], "masked_tokens": runs[0]["masked_tokens"],
                             "tokens_per_s": statistics.median(rates), "rounds": rates,
                             "step_seconds": statistics.median(m["step_seconds"] for m in runs),
                             "rank_cpu_seconds": cpu,
                             # what the workers would do with a free core each: every rank does the same work
                             "tokens_per_rank_cpu_s": runs[0]["masked_tokens"] / cpu})
    for key in ("tokens_per_s", "tokens_per_rank_cpu_s"):
        base = {(r["model_format"], r["batch_size"]): r[key] for r in rows if r["workers"] == workers[0]}
        for r in rows:
            r[f"speedup_{key}"] = r[key] / base[r["model_format"], r["batch_size"]]
    return {"data": str(data), "device": device, "cpus": os.cpu_count(), "rows": rows,
            "load_average": {"before": load_before, "after": os.getloadavg()}}


def print_ddp(report: dict) -> None:
    print(f"training throughput on {report['device']} ({report['cpus']} CPUs), one torch thread per worker, "
          f"{Path(report['data']).name}; masked tokens/s of the steps, median of {len(report['rows'][0]['rounds'])} rounds")
    print("(wall: over the steps' seconds; per rank CPU: over one rank's CPU seconds in the steps, what N workers")
    print(" would reach with a free core each)")
    print(f"{'format':<7} {'batch':>5} {'workers':>7} {'steps':>6} {'tokens':>9} | {'steps s':>7} {'tokens/s':>9} "
          f"{'speedup':>7} | {'rank CPU s':>10} {'tokens/s':>9} {'speedup':>7}")
    for r in report["rows"]:
        print(f"{r['model_format']:<7} {r['batch_size']:>5} {r['workers']:>7} {r['steps']:>6} {r['masked_tokens']:>9,} | "
              f"{r['step_seconds']:>7.1f} {r['tokens_per_s']:>9,.0f} {r['speedup_tokens_per_s']:>7.2f} | "
              f"{r['rank_cpu_seconds']:>10.1f} {r['tokens_per_rank_cpu_s']:>9,.0f} {r['speedup_tokens_per_rank_cpu_s']:>7.2f}")
    before, after = report["load_average"]["before"], report["load_average"]["after"]
    print(f"load average before {before[0]:.2f}, after {after[0]:.2f} (1 min)", flush=True)


if __name__ == "__main__":  # python -m bench.ddp [--device cuda]: this section alone
    import argparse

    from bench.speed import sample_lines

    p = argparse.ArgumentParser(prog="python -m bench.ddp", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    cache = Path(tempfile.gettempdir()) / "nulog-bench"
    cache.mkdir(parents=True, exist_ok=True)
    found = ddp(sample_lines(a.lines, cache), device=a.device, rounds=a.rounds)
    print(json.dumps(found, indent=2)) if a.json else print_ddp(found)
