"""A `LogQuery` in the query DSL that Elasticsearch and OpenSearch share, and their timestamps in ns.

Each interval becomes a `bool` query of exact-value filters: a `range` on the timestamp field in the unit
the index stores (nanoseconds, milliseconds, seconds or an ISO date, whose nanoseconds a `date_nanos` field
compares exactly), `term`s for the workloads, and `must_not` for the exclusions. A workload name is always a
`term` value, never query syntax: `nginx*`, `web OR db` or a quote match exactly that string. The cap on
documents is divided between the intervals in proportion to what each holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from training_controller.core.queries import Interval, LogQuery

TimestampUnit = Literal["ns", "ms", "s", "iso"]
TIMESTAMP_UNITS: tuple[str, ...] = ("ns", "ms", "s", "iso")
_NS_PER: dict[str, int] = {"ns": 1, "ms": 1_000_000, "s": 1_000_000_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:[.,](?P<frac>\d+))?)?"
    r"(?P<tz>Z|z|[+-]\d{2}:?\d{2})?$"
)
ISO_FORMAT = "strict_date_optional_time_nanos"


# --- timestamps -----------------------------------------------------------------------------------------


def ns_to_iso(ns: int) -> str:
    """An ISO-8601 UTC string with nanoseconds: what a `date_nanos` field compares exactly."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return f"{(_EPOCH + timedelta(seconds=seconds)):%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


def iso_to_ns(text: str) -> int:
    """Nanoseconds since the epoch of an ISO-8601 date; no zone means UTC. Keeps all nine digits."""
    m = _ISO.match(text.strip())
    if not m:
        raise ValueError(f"not an ISO-8601 date: {text!r}")
    tz = m["tz"] or "+00:00"
    if tz in ("Z", "z"):
        tz = "+00:00"
    elif ":" not in tz:
        tz = f"{tz[:3]}:{tz[3:]}"
    clock = m["time"] or "00:00:00"
    if clock.count(":") == 1:
        clock += ":00"
    dt = datetime.fromisoformat(f"{m['date']}T{clock}{tz}")
    frac = (m["frac"] or "")[:9].ljust(9, "0")
    return (dt - _EPOCH) // timedelta(seconds=1) * 1_000_000_000 + int(frac)


def bound_in_unit(ns: int, unit: TimestampUnit) -> int | str:
    """A time bound in the field's unit, rounded up so that `gte`/`lt` keep the half-open range exact."""
    if unit == "iso":
        return ns_to_iso(ns)
    return -(-ns // _NS_PER[unit])


def value_to_ns(value: Any, unit: TimestampUnit) -> int:
    """A document's timestamp, as stored in the field's unit, in nanoseconds."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if unit == "iso":
        if isinstance(value, int | float):  # a date field may also hold epoch milliseconds
            return round(value * 1_000_000)
        return iso_to_ns(str(value))
    factor = _NS_PER[unit]
    if isinstance(value, int):
        return value * factor
    if isinstance(value, float):
        return round(value * factor)
    text = str(value).strip()
    try:
        return int(text) * factor
    except ValueError:
        return round(float(text) * factor)


# --- query translation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexLayout:
    """Where the fields of a log document live in the index."""

    index: str = "logs"
    timestamp_field: str = "timestamp"
    timestamp_unit: TimestampUnit = "ns"
    keyword_suffix: str = ""  # e.g. ".keyword" when the exact-value fields are analysed text


def _term(field: str, value: str) -> dict[str, Any]:
    return {"term": {field: {"value": value}}}


def interval_query(query: LogQuery, interval: Interval, layout: IndexLayout) -> dict[str, Any]:
    """The query DSL for one interval of a `LogQuery`: exact-value filters only, never query_string."""
    time_range: dict[str, Any] = {
        "gte": bound_in_unit(interval.start_ns, layout.timestamp_unit),
        "lt": bound_in_unit(interval.end_ns, layout.timestamp_unit),
    }
    if layout.timestamp_unit == "iso":
        time_range["format"] = ISO_FORMAT
    filters: list[dict[str, Any]] = [{"range": {layout.timestamp_field: time_range}}]
    if query.workloads:
        should = []
        for workload in query.workloads:
            terms = [
                _term(field + layout.keyword_suffix, value)
                for field, value in (
                    ("cluster_id", workload.cluster_id),
                    ("namespace_name", workload.namespace_name),
                    ("deployment", workload.deployment),
                )
                if value
            ]
            should.append({"bool": {"filter": terms}} if terms else {"match_all": {}})
        filters.append({"bool": {"should": should, "minimum_should_match": 1}})
    must_not: list[dict[str, Any]] = []
    if query.exclude_anomalies:
        must_not.append(_term("anomaly_level" + layout.keyword_suffix, "Anomaly"))
    must_not.extend({"match_phrase": {"log": keyword}} for keyword in query.exclude_keywords)
    body: dict[str, Any] = {"filter": filters}
    if must_not:
        body["must_not"] = must_not
    return {"bool": body}


def allocate_cap(cap: int | None, counts: Sequence[int]) -> list[int]:
    """Each interval's share of the cap, in proportion to its count: floor shares, then the remainder to the
    largest fractions (earlier interval first on a tie). Never more than an interval holds, nor than the cap."""
    total = sum(counts)
    if cap is None or total <= cap:
        return list(counts)
    shares = [cap * c // total for c in counts]
    remainder = cap - sum(shares)
    by_fraction = sorted(range(len(counts)), key=lambda i: (-(cap * counts[i] % total), i))
    for i in by_fraction[:remainder]:
        shares[i] += 1
    return shares
