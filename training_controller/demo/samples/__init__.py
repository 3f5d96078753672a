"""Realistic sample logs for the demo and the tests, shaped like documents of an Opni `logs` index.

The controller trains NuLog on whatever the log source returns, and a demo or a test needs that source to hold
something that looks like a real cluster: several workloads with their own formats (an nginx ingress, a
PostgreSQL server, the Kubernetes API server, a Java service that now and then dumps a stack trace), many
distinct lines built from far fewer templates, and timestamps inside the messages that agree with the
document's own. Everything here is deterministic given a seed (one `random.Random` per call, no module
state) and streams: documents are generated one at a time and files are written line by line, so a day of
logs never sits in memory.

Each document holds exactly the fields of an Opni `logs` index:

    {"timestamp": <int ns since epoch>, "log": "<raw line>", "cluster_id": ..., "namespace_name": ...,
     "deployment": ..., "pod_name": ..., "is_control_plane_log": <bool>}
"""

from __future__ import annotations

import gzip
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from training_controller.demo.samples.app import emit_app
from training_controller.demo.samples.common import (
    NS_PER_HOUR,
    NS_PER_MINUTE,
    NS_PER_S,
    Pod,
    Workload,
    k8s_suffix,
    utc,
)
from training_controller.demo.samples.control_plane import emit_control_plane
from training_controller.demo.samples.db import emit_db
from training_controller.demo.samples.web import emit_web

FIELDS = (
    "timestamp",
    "log",
    "cluster_id",
    "namespace_name",
    "deployment",
    "pod_name",
    "is_control_plane_log",
)


def _workloads(rng: random.Random) -> list[Workload]:
    def replicaset_pods(deployment: str, n: int, pids: Callable[[], tuple[int, ...]]) -> list[Pod]:
        template_hash = k8s_suffix(rng, 9)
        return [Pod(f"{deployment}-{template_hash}-{k8s_suffix(rng, 5)}", pids()) for _ in range(n)]

    def nginx_pids() -> tuple[int, ...]:
        return tuple(sorted(rng.sample(range(20, 60), 4)))

    return [
        Workload("web", "nginx-ingress", False, 0.45,
                  replicaset_pods("nginx-ingress", 3, nginx_pids), emit_web),
        Workload("data", "postgres", False, 0.20,
                  [Pod(f"postgres-{i}", (rng.randint(25, 90), rng.randint(90, 400))) for i in range(2)],
                  emit_db),
        Workload("kube-system", "kube-apiserver", True, 0.20,
                  [Pod(f"kube-apiserver-master-{i}", (1,) * 6 + tuple(rng.sample(range(10, 400), 3)))
                   for i in range(1, 4)],
                  emit_control_plane),
        Workload("shop", "payment-service", False, 0.15,
                  replicaset_pods("payment-service", 2, lambda: (1,)), emit_app),
    ]


def generate_documents(
    *,
    start_ns: int,
    end_ns: int,
    rate_per_s: float = 2.0,
    seed: int = 0,
    cluster_id: str = "demo-cluster",
) -> Iterator[dict]:
    """Yield documents with timestamps in [start_ns, end_ns), increasing, roughly rate_per_s per second overall (jittered)."""
    if rate_per_s <= 0:
        raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
    rng = random.Random(seed)
    workloads = _workloads(rng)
    weights = [w.weight for w in workloads]
    mean_gap_ns = NS_PER_S / rate_per_s
    t = start_ns
    while True:
        # Exponential gaps (a Poisson process) give bursts and lulls around the mean rate.
        t += max(1, int(rng.expovariate(1.0) * mean_gap_ns))
        if t >= end_ns:
            return
        workload = rng.choices(workloads, weights=weights)[0]
        pod = rng.choice(workload.pods)
        for ts, line in workload.emit(rng, pod, t):
            if ts >= end_ns:
                return
            t = ts
            yield {
                "timestamp": ts,
                "log": line,
                "cluster_id": cluster_id,
                "namespace_name": workload.namespace,
                "deployment": workload.deployment,
                "pod_name": pod.name,
                "is_control_plane_log": workload.control_plane,
            }


def write_sample_logs(
    out_dir: Path,
    *,
    hours: float,
    end_ns: int | None = None,
    rate_per_s: float = 2.0,
    seed: int = 0,
    cluster_id: str = "demo-cluster",
    file_hours: float = 1.0,
) -> list[Path]:
    """Write JSONL files (one document per line) covering `hours` ending at end_ns (default: now, floored to the minute); one file per `file_hours` slice named logs-<UTC yyyymmddThhmm>.jsonl; returns the paths in time order."""
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
    slice_ns = round(file_hours * NS_PER_HOUR)
    if slice_ns < NS_PER_MINUTE:
        raise ValueError(f"file_hours must be at least one minute, got {file_hours}")
    if end_ns is None:
        end_ns = time.time_ns() // NS_PER_MINUTE * NS_PER_MINUTE
    start_ns = end_ns - round(hours * NS_PER_HOUR)
    n_files = math.ceil((end_ns - start_ns) / slice_ns)
    starts = [start_ns + i * slice_ns for i in range(n_files)]
    paths = [Path(out_dir) / f"logs-{utc(s):%Y%m%dT%H%M}.jsonl" for s in starts]
    Path(out_dir).mkdir(parents=True, exist_ok=True)

    documents = generate_documents(start_ns=start_ns, end_ns=end_ns, rate_per_s=rate_per_s, seed=seed,
                                   cluster_id=cluster_id)
    index = 0
    out = paths[0].open("w", encoding="utf-8")
    try:
        for doc in documents:
            while index + 1 < n_files and doc["timestamp"] >= starts[index + 1]:
                out.close()
                index += 1
                out = paths[index].open("w", encoding="utf-8")
            out.write(json.dumps(doc, separators=(",", ":")) + "\n")
        # Every slice gets its file, even one the (random) arrivals left empty.
        while index + 1 < n_files:
            out.close()
            index += 1
            out = paths[index].open("w", encoding="utf-8")
    finally:
        out.close()
    return paths


def iter_documents(paths: Iterable[Path]) -> Iterator[dict]:
    """Yield the documents of JSONL files (`.jsonl` or `.jsonl.gz`) in file order."""
    for path in paths:
        path = Path(path)
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
