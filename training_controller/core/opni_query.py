"""Reading the OpenSearch query that Opni's training controller puts in its `train` messages.

Opni's last training controller publishes `{"max_size", "query", "count"}` on `train`, where `query` is a
whole search body for the `logs` index: a `bool` with a `range` filter on `time` (milliseconds), one
`query_string` per watched deployment (`"<cluster> AND <namespace> AND <deployment>"`) under `should`, and
under `must_not` the anomaly label and the anomaly keywords. A search backend runs that body as it is; a
source that filters in Python (the files source) needs it as a `LogQuery`. `interpret` translates what it
recognises and lists what it does not, so that such a source can refuse the query with a clear reason
instead of training on the wrong logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from training_controller.core.queries import Interval, Workload

MS = 1_000_000  # nanoseconds per millisecond
TIME_FIELDS = ("time", "timestamp", "@timestamp")
# A workload field of Opni's index -> the LogQuery workload attribute; `.keyword` is the exact-value field.
WORKLOAD_FIELDS = {"cluster_id": "cluster_id", "namespace_name": "namespace_name", "deployment": "deployment"}
_KEYWORD = re.compile(r"^\((.*)\)$")


@dataclass
class Interpretation:
    """What a search body asks for, as far as it could be read."""

    intervals: list[Interval] = field(default_factory=list)
    workloads: list[Workload] = field(default_factory=list)
    exclude_anomalies: bool = False
    exclude_keywords: list[str] = field(default_factory=list)
    not_understood: list[str] = field(default_factory=list)


def interpret(body: dict[str, Any]) -> Interpretation:
    """Translate an Opni training search body; every clause not understood is named in `not_understood`."""
    out = Interpretation()
    query = body.get("query", body)
    extra = sorted(set(body) - {"query", "size", "sort", "_source"}) if "query" in body else []
    out.not_understood += [f"top-level {k!r}" for k in extra]
    if not isinstance(query, dict) or set(query) != {"bool"} or not isinstance(query["bool"], dict):
        out.not_understood.append("a query that is not a single bool query")
        return out
    for clause, parts in query["bool"].items():
        if clause == "minimum_should_match":
            if parts not in (1, "1"):
                out.not_understood.append(f"minimum_should_match {parts!r}")
            continue
        items = parts if isinstance(parts, list) else [parts]
        for item in items:
            _one(clause, item, out)
    return out


def _one(clause: str, item: Any, out: Interpretation) -> None:
    if not isinstance(item, dict) or len(item) != 1:
        out.not_understood.append(f"{clause} clause {str(item)[:80]}")
        return
    (kind, spec), = item.items()
    if clause in ("filter", "must") and kind == "range" and (interval := _interval(spec)) is not None:
        out.intervals.append(interval)
    elif clause in ("filter", "must") and kind in ("term", "match") and (w := _workload_term(spec)) is not None:
        out.workloads.append(w)
    elif clause == "should" and kind == "query_string" and (w := _workload_string(spec)) is not None:
        out.workloads.append(w)
    elif clause == "must_not" and kind == "match" and _is_anomaly_label(spec):
        out.exclude_anomalies = True
    elif clause == "must_not" and kind == "query_string" and (words := _keywords(spec)) is not None:
        out.exclude_keywords += words
    else:
        out.not_understood.append(f"{clause} {kind} {str(spec)[:80]}")


def _interval(spec: Any) -> Interval | None:
    if not isinstance(spec, dict) or len(spec) != 1:
        return None
    (name, bounds), = spec.items()
    if name not in TIME_FIELDS or not isinstance(bounds, dict):
        return None
    unknown = set(bounds) - {"gte", "gt", "lte", "lt", "format"}
    if unknown or bounds.get("format", "epoch_millis") != "epoch_millis":
        return None
    try:
        start = int(bounds["gte"]) if "gte" in bounds else int(bounds["gt"]) + 1
        end = int(bounds["lt"]) if "lt" in bounds else int(bounds["lte"]) + 1
    except (KeyError, TypeError, ValueError):
        return None
    return Interval(start_ns=start * MS, end_ns=end * MS) if start < end else None


def _field(name: str) -> str | None:
    return WORKLOAD_FIELDS.get(name.removesuffix(".keyword").removeprefix("kubernetes."))


def _workload_term(spec: Any) -> Workload | None:
    if not isinstance(spec, dict) or len(spec) != 1:
        return None
    (name, value), = spec.items()
    if isinstance(value, dict):
        value = value.get("value", value.get("query"))
    attr = _field(name)
    return Workload(**{attr: str(value)}) if attr and isinstance(value, str | int) else None


def _workload_string(spec: Any) -> Workload | None:
    """`{"fields": [cluster, namespace, deployment], "query": "c AND ns AND dep"}` -> one workload."""
    if not isinstance(spec, dict) or set(spec) - {"fields", "query"}:
        return None
    fields = [_field(str(f)) for f in spec.get("fields", [])]
    values = str(spec.get("query", "")).split(" AND ")
    if fields != ["cluster_id", "namespace_name", "deployment"] or len(values) != 3:
        return None
    values = [v.strip() for v in values]
    if not all(values):
        return None
    return Workload(cluster_id=values[0], namespace_name=values[1], deployment=values[2])


def _is_anomaly_label(spec: Any) -> bool:
    return isinstance(spec, dict) and len(spec) == 1 and spec.get("anomaly_level.keyword", spec.get("anomaly_level")) == "Anomaly"


def _keywords(spec: Any) -> list[str] | None:
    """`{"query": "(error) or (fail) ...", "default_field": "log"}` -> ["error", "fail", ...]."""
    if not isinstance(spec, dict) or set(spec) - {"query", "default_field"} or spec.get("default_field") != "log":
        return None
    words = []
    for part in str(spec.get("query", "")).split(" or "):
        m = _KEYWORD.match(part.strip())
        if not m or not m.group(1).strip():
            return None
        words.append(m.group(1).strip())
    return words or None
