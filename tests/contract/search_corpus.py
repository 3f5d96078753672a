"""The documents a fake search cluster serves (`search_server.py`), and the query DSL it evaluates on them.

Two corpora: `ListCorpus` (a few documents, full query evaluation, the subset of the DSL the adapters may
send and nothing else) and `SyntheticCorpus` (N documents made on the fly from their position, for the
memory and rate measurements; only the time range is evaluated).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from training_controller.core.queries import Interval
from training_controller.demo.samples import generate_documents

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_617_037_200 * 10**9  # 2021-03-29 17:00 UTC
S = 10**9


def iso(ns: int) -> str:
    """ns as the ISO string a `date_nanos` field would hold."""
    seconds, frac = divmod(ns, S)
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def make_docs(
    n: int, *, start_ns: int = T0, step_ns: int = S, unit: str = "ns", field: str = "timestamp", **extra: Any
) -> list[dict[str, Any]]:
    """n Opni-shaped log documents, one per step, the timestamp stored in `unit`."""
    docs = []
    for i in range(n):
        ns = start_ns + i * step_ns
        value: Any = {"ns": ns, "ms": ns // 10**6, "s": ns // 10**9, "iso": iso(ns)}[unit]
        docs.append(
            {
                field: value,
                "log": f"line {i}",
                "cluster_id": "c1",
                "namespace_name": "default",
                "deployment": "web",
                "anomaly_level": "Normal",
                **extra,
            }
        )
    return docs


def window(start_s: float, end_s: float) -> Interval:
    """The interval [T0 + start_s, T0 + end_s)."""
    return Interval(start_ns=T0 + int(start_s * S), end_ns=T0 + int(end_s * S))


class QueryError(Exception):
    """The request is not valid DSL for this server: answered with a 400 like the real one."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _iso_ns(text: str) -> int:
    """Nanoseconds of an ISO-8601 string (written apart from the adapter's parser on purpose)."""
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?", text)
    if not m:
        raise QueryError("parse_exception", f"failed to parse date field [{text}]")
    dt = datetime.fromisoformat(f"{m[1]}T{m[2]}{'+00:00' if m[4] in (None, 'Z') else m[4]}")
    return int((dt - _EPOCH).total_seconds()) * 10**9 + int((m[3] or "0").ljust(9, "0"))


@dataclass
class Mapping:
    """How the fake index stores the timestamp: field name and unit (`ns`, `ms`, `s` or `iso`)."""

    timestamp_field: str = "timestamp"
    unit: str = "ns"

    def sort_value(self, stored: Any) -> int:
        """The value a hit's `sort` holds for the timestamp (a date_nanos field sorts in ns)."""
        return _iso_ns(stored) if self.unit == "iso" else int(stored)

    def bound(self, value: Any, fmt: str | None) -> int:
        if self.unit == "iso":
            if not isinstance(value, str):
                raise QueryError("parse_exception", f"failed to parse date field [{value}]")
            return _iso_ns(value)
        if not isinstance(value, int):
            raise QueryError("query_shard_exception", f"expected a long for [{self.timestamp_field}]")
        return value


def _field(doc: dict[str, Any], name: str) -> Any:
    return doc.get(name.removesuffix(".keyword"))


def _one_field(spec: dict[str, Any], long_form: str) -> tuple[str, Any]:
    """The field and value of a one-field query, short (`{f: v}`) or long (`{f: {long_form: v}}`)."""
    ((name, value),) = spec.items()
    return name, value[long_form] if isinstance(value, dict) else value


def matches(q: dict[str, Any], doc: dict[str, Any], mapping: Mapping) -> bool:
    """The subset of the query DSL the adapters may send; anything else is refused with a 400."""
    if len(q) != 1:
        raise QueryError("parsing_exception", "[_na] query malformed, must start with start_object")
    ((kind, spec),) = q.items()
    if kind == "match_all":
        return True
    if kind == "bool":
        unknown = set(spec) - {"filter", "must", "should", "must_not", "minimum_should_match"}
        if unknown:
            raise QueryError("parsing_exception", f"[bool] query does not support [{sorted(unknown)[0]}]")
        for clause in spec.get("filter", []) + spec.get("must", []):
            if not matches(clause, doc, mapping):
                return False
        if any(matches(clause, doc, mapping) for clause in spec.get("must_not", [])):
            return False
        should = spec.get("should", [])
        if should:
            need = int(spec.get("minimum_should_match", 1))
            if sum(matches(clause, doc, mapping) for clause in should) < need:
                return False
        return True
    if kind == "term":
        name, value = _one_field(spec, "value")
        return _field(doc, name) == value
    if kind == "range":
        ((name, bounds),) = spec.items()
        if name != mapping.timestamp_field:
            raise QueryError("query_shard_exception", f"range on unexpected field [{name}]")
        ts = mapping.sort_value(doc.get(name))
        fmt = bounds.get("format")
        for op, test in (("gte", ts.__ge__), ("gt", ts.__gt__), ("lt", ts.__lt__), ("lte", ts.__le__)):
            if op in bounds and not test(mapping.bound(bounds[op], fmt)):
                return False
        return True
    if kind == "match_phrase":
        name, phrase = _one_field(spec, "query")
        return str(phrase).lower() in str(doc.get(name, "")).lower()
    raise QueryError("parsing_exception", f"unknown query [{kind}]")


def time_range(q: dict[str, Any], mapping: Mapping) -> tuple[int, int]:
    """[gte, lt) of the query's range on the timestamp field, in the field's sort unit."""
    for clause in q.get("bool", {}).get("filter", []):
        if "range" in clause:
            bounds = clause["range"][mapping.timestamp_field]
            return mapping.bound(bounds["gte"], None), mapping.bound(bounds["lt"], None)
    raise QueryError("parsing_exception", "expected a range filter on the timestamp")


class Corpus(Protocol):
    def count(self, query: dict[str, Any]) -> int: ...

    def page(
        self, query: dict[str, Any], after: tuple[int, int] | None, size: int
    ) -> list[tuple[str, dict[str, Any], list[int]]]: ...


class ListCorpus:
    """A few documents, held in memory, with the full query evaluated."""

    def __init__(self, docs: Sequence[dict[str, Any]], mapping: Mapping) -> None:
        self.mapping = mapping
        self.docs = [(mapping.sort_value(d[mapping.timestamp_field]), n, d) for n, d in enumerate(docs)]
        self.docs.sort(key=lambda t: (t[0], t[1]))

    def count(self, query: dict[str, Any]) -> int:
        return sum(1 for _, _, d in self.docs if matches(query, d, self.mapping))

    def page(self, query, after, size):  # type: ignore[no-untyped-def]
        out = []
        for ts, n, doc in self.docs:
            if after is not None and (ts, n) <= after:
                continue
            if matches(query, doc, self.mapping):
                out.append((f"doc-{n}", doc, [ts, n]))
                if len(out) >= size:
                    break
        return out


class SyntheticCorpus:
    """`n` documents made from their position: document i is at `start_ns + i * step_ns` (unit ns).

    Their fields and log lines are those of the sample logs (`training_controller.demo.samples`: web access and
    error logs, Postgres, Kubernetes control plane, Java services), drawn in turn from a pool of `pool`.
    """

    def __init__(self, n: int, *, start_ns: int, step_ns: int, pool: int = 20_000) -> None:
        self.n, self.start_ns, self.step_ns = n, start_ns, step_ns
        self.mapping = Mapping("timestamp", "ns")
        sample = generate_documents(start_ns=start_ns, end_ns=start_ns + 3600 * S, rate_per_s=pool / 3600, seed=7)
        self.pool = [{k: v for k, v in doc.items() if k != "timestamp"} for doc in itertools.islice(sample, pool)]

    def _positions(self, query: dict[str, Any]) -> range:
        lo, hi = time_range(query, self.mapping)
        first = max(0, -(-(lo - self.start_ns) // self.step_ns))
        end = min(self.n, max(0, -(-(hi - self.start_ns) // self.step_ns)))
        return range(first, max(first, end))

    def count(self, query: dict[str, Any]) -> int:
        return len(self._positions(query))

    def page(self, query, after, size):  # type: ignore[no-untyped-def]
        positions = self._positions(query)
        first = positions.start if after is None else max(positions.start, after[1] + 1)
        out = []
        for i in range(first, min(first + size, positions.stop)):
            ts = self.start_ns + i * self.step_ns
            out.append((f"doc-{i}", {"timestamp": ts, **self.pool[i % len(self.pool)]}, [ts, i]))
        return out
