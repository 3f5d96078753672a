"""The backend-neutral log query.

A `LogQuery` says which documents a training wants, as data: time intervals, exact-value workload filters,
exclusions and a cap. Each log source translates it into its own query language; a workload name is always a
value to compare with, never query syntax.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The words Opni drops from training data: messages with them are likely anomalies themselves.
ANOMALY_KEYWORDS: tuple[str, ...] = (
    "error",
    "fail",
    "fatal",
    "exception",
    "timeout",
    "unavailable",
    "crash",
    "connection refused",
    "network error",
    "deadlock",
    "out of disk",
    "high load",
)


class Interval(BaseModel):
    """A half-open time range [start_ns, end_ns) in nanoseconds since the epoch."""

    model_config = ConfigDict(frozen=True)

    start_ns: int
    end_ns: int

    def contains(self, ts_ns: int) -> bool:
        return self.start_ns <= ts_ns < self.end_ns


class Workload(BaseModel):
    """One deployment of one namespace of one cluster; an empty field matches any value."""

    model_config = ConfigDict(frozen=True)

    cluster_id: str = ""
    namespace_name: str = ""
    deployment: str = ""

    def matches(self, doc: dict[str, Any]) -> bool:
        return all(
            not want or doc.get(field) == want
            for field, want in (
                ("cluster_id", self.cluster_id),
                ("namespace_name", self.namespace_name),
                ("deployment", self.deployment),
            )
        )


class LogQuery(BaseModel):
    """Which log documents to export for one training."""

    model_config = ConfigDict(frozen=True)

    intervals: tuple[Interval, ...] = Field(min_length=1)
    workloads: tuple[Workload, ...] = Field(default=(), description="Any of these; empty means all.")
    exclude_anomalies: bool = Field(default=False, description="Drop documents labelled anomalous.")
    exclude_keywords: tuple[str, ...] = Field(default=(), description="Drop messages holding any of these.")
    max_documents: int | None = Field(default=None, ge=1, description="Cap over all intervals together.")
    search: dict[str, Any] | None = Field(
        default=None,
        description="A search body to run as it is (Opni's training query); the fields above are what could "
        "be read from it, for sources that filter in Python.",
    )
    search_not_understood: tuple[str, ...] = Field(
        default=(), description="Clauses of `search` that a source filtering in Python cannot apply."
    )

    def matches(self, doc: dict[str, Any], ts_ns: int) -> bool:
        """Whether one document belongs to the result (used by sources that filter in Python)."""
        if not any(interval.contains(ts_ns) for interval in self.intervals):
            return False
        if self.workloads and not any(w.matches(doc) for w in self.workloads):
            return False
        if self.exclude_anomalies and str(doc.get("anomaly_level", "")).lower() == "anomaly":
            return False
        if self.exclude_keywords:
            text = str(doc.get("log", "")).lower()
            if any(word.lower() in text for word in self.exclude_keywords):
                return False
        return True
