"""What the Elasticsearch and OpenSearch log sources share: query DSL, paging, the cap, retries.

The two backends speak the same query DSL and page the same way (a point in time, `search_after`, a
tiebreaker), but their official clients differ and the elasticsearch client ≥ 8 refuses to talk to
OpenSearch. So the translation of a `LogQuery`, the paging loop, the division of the cap between intervals
and the retry policy live here once; each adapter only wraps its client's calls and sorts its client's
exceptions into "retry" and "do not retry".

A workload name is always a `term` value, never query syntax: `nginx*`, `web OR db` or a quote match
exactly that string.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from training_controller.core.errors import SourceRejected, SourceUnavailable
from training_controller.core.ports import LogDocument, LogSource
from training_controller.core.queries import Interval, LogQuery

log = logging.getLogger(__name__)

T = TypeVar("T")
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


# --- secrets and error messages ------------------------------------------------------------------------


def secret_value(value: SecretStr | str | None) -> str | None:
    """The plain text of a password or key given as SecretStr or str."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


@dataclass(frozen=True)
class Credentials:
    """Basic auth or an API key, in plain text, checked to be one or the other."""

    username: str | None
    password: str | None
    api_key: str | None

    @classmethod
    def of(
        cls, username: str | None, password: SecretStr | str | None, api_key: SecretStr | str | None
    ) -> Credentials:
        plain_password, plain_key = secret_value(password), secret_value(api_key)
        if plain_key and (username or plain_password):
            raise ValueError("give either a username and password or an API key, not both")
        if bool(username) != bool(plain_password):
            raise ValueError("basic auth needs both a username and a password")
        return cls(username or None, plain_password or None, plain_key or None)


def public_url(url: str) -> str:
    """The URL without user and password, fit for a log line or an error message."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def error_reason(body: Any, fallback: str) -> str:
    """`type: reason` of an Elasticsearch/OpenSearch error body, else the fallback."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            kind, reason = error.get("type"), error.get("reason")
            if kind and reason:
                return f"{kind}: {reason}"
            return str(reason or kind or fallback)
        if isinstance(error, str):
            return error
    if isinstance(body, str) and body:
        return body[:300]
    return fallback


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


# --- the shared source ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a request that may pass (429, 5xx, no connection)."""

    max_tries: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the `attempt`-th failed try (1-based)."""
        return min(self.base_delay * 2 ** (attempt - 1), self.max_delay)


def retryable_status(status: int) -> bool:
    """Whether an HTTP status may pass: too many requests, or the server's own trouble."""
    return status == 429 or status >= 500


@dataclass(frozen=True)
class Failure:
    """A client exception, sorted: whether a retry may help, the HTTP status if any, and why."""

    retry: bool
    status: int | None
    reason: str


class SearchLogSource(LogSource, abc.ABC):
    """A log source on a search backend: PIT + search_after paging, the cap, retries (shared by ES and OS)."""

    backend = "search backend"

    def __init__(
        self,
        endpoint: str,
        *,
        username: str | None = None,
        password: SecretStr | str | None = None,
        api_key: SecretStr | str | None = None,
        ca_certs: str | None = None,
        verify_certs: bool = True,
        index: str = "logs",
        timestamp_field: str = "timestamp",
        timestamp_unit: TimestampUnit = "ns",
        keyword_suffix: str = "",
        page_size: int = 1000,
        keep_alive: str = "2m",
        request_timeout: float = 30.0,
        max_tries: int = 5,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 8.0,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        if timestamp_unit not in TIMESTAMP_UNITS:
            raise ValueError(f"timestamp unit must be one of {', '.join(TIMESTAMP_UNITS)}")
        auth = Credentials.of(username, password, api_key)
        self.layout = IndexLayout(index, timestamp_field, timestamp_unit, keyword_suffix)
        self.page_size = page_size
        self.keep_alive = keep_alive
        self.retry = RetryPolicy(max_tries, retry_base_delay, retry_max_delay)
        self.endpoint = public_url(endpoint)
        secrets = (auth.password or "", auth.api_key or "", urlsplit(endpoint).password or "")
        self._secrets = tuple(s for s in secrets if s)
        if not verify_certs:
            log.warning("%s %s: TLS certificate verification is turned off", self.backend, self.endpoint)
        self._connect(endpoint, auth, ca_certs=ca_certs, verify_certs=verify_certs, request_timeout=request_timeout)

    # What each backend provides: its client, its calls and the sorting of its exceptions.

    @abc.abstractmethod
    def _connect(
        self, endpoint: str, auth: Credentials, *, ca_certs: str | None, verify_certs: bool, request_timeout: float
    ) -> None:
        """Make the backend's client; the client's own retries stay off (ours apply)."""

    @abc.abstractmethod
    async def _count_request(self, query: dict[str, Any]) -> int: ...

    @abc.abstractmethod
    async def _open_pit(self) -> str: ...

    @abc.abstractmethod
    async def _search_request(self, body: dict[str, Any]) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def _close_pit(self, pit_id: str) -> None: ...

    @abc.abstractmethod
    async def _ping_request(self) -> bool: ...

    @abc.abstractmethod
    def _classify(self, exc: Exception) -> Failure | None:
        """How to treat a client exception; None for exceptions that are not the client's."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the client and its connections."""

    async def _tiebreaker(self) -> str:
        return "_shard_doc"

    # Shared behaviour.

    async def close(self) -> None:
        """Same as `aclose`."""
        await self.aclose()

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def _call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run one request with retries; client exceptions leave as SourceUnavailable or SourceRejected."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await request()
            except Exception as e:
                failure = self._classify(e)
                if failure is None:
                    raise
                status = f"{failure.status}" if failure.status is not None else "no answer"
                reason = self._redact(failure.reason)
                if not failure.retry:
                    raise SourceRejected(
                        f"{self.backend} refused {what} ({status}): {reason}; retrying will not help"
                    ) from e
                if attempt >= self.retry.max_tries:
                    raise SourceUnavailable(
                        f"{self.backend} at {self.endpoint}: {what} failed after {attempt} tries "
                        f"({status}): {reason}; retry later"
                    ) from e
                delay = self.retry.delay(attempt)
                log.warning(
                    "%s %s: %s failed (%s: %s), try %d of %d, retrying in %.2fs",
                    self.backend,
                    self.endpoint,
                    what,
                    status,
                    reason,
                    attempt,
                    self.retry.max_tries,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _interval_counts(self, query: LogQuery) -> list[int]:
        counts = []
        for interval in query.intervals:
            dsl = interval_query(query, interval, self.layout)
            counts.append(await self._call("count", lambda dsl=dsl: self._count_request(dsl)))
        return counts

    async def count(self, query: LogQuery) -> int:
        return sum(await self._interval_counts(query))

    def _document(self, hit: dict[str, Any]) -> LogDocument | None:
        """A hit as the core wants it: `timestamp` in int nanoseconds, `log` a string, the rest as stored."""
        doc = dict(hit.get("_source") or {})
        try:
            doc["timestamp"] = value_to_ns(doc[self.layout.timestamp_field], self.layout.timestamp_unit)
            if doc.get("log") is None:
                return None
            if not isinstance(doc["log"], str):
                doc["log"] = str(doc["log"])
        except (KeyError, ValueError, TypeError, OverflowError):
            return None
        return doc

    async def stream(self, query: LogQuery) -> AsyncIterator[list[LogDocument]]:
        shares: list[int | None]
        if query.max_documents is None:
            shares = [None] * len(query.intervals)
        else:
            shares = list(allocate_cap(query.max_documents, await self._interval_counts(query)))
        if all(share == 0 for share in shares):
            return
        tiebreaker = await self._call("version check", self._tiebreaker)
        sort = [{self.layout.timestamp_field: {"order": "asc"}}, {tiebreaker: {"order": "asc"}}]
        pit_id = await self._call("open point in time", self._open_pit)
        skipped = 0
        try:
            for interval, share in zip(query.intervals, shares, strict=True):
                dsl = interval_query(query, interval, self.layout)
                sent = 0
                search_after: list[Any] | None = None
                while share is None or sent < share:
                    size = self.page_size if share is None else min(self.page_size, share - sent)
                    body: dict[str, Any] = {
                        "pit": {"id": pit_id, "keep_alive": self.keep_alive},
                        "size": size,
                        "query": dsl,
                        "sort": sort,
                        "track_total_hits": False,
                    }
                    if search_after is not None:
                        body["search_after"] = search_after
                    page = await self._call("search", lambda body=body: self._search_request(body))
                    pit_id = page.get("pit_id") or pit_id  # the newest id is the one to use and to close
                    hits = page.get("hits", {}).get("hits", [])
                    if not hits:
                        break
                    search_after = hits[-1]["sort"]
                    last_page = len(hits) < size
                    batch = []
                    for hit in hits:
                        doc = self._document(hit)
                        if doc is None:
                            skipped += 1
                        else:
                            batch.append(doc)
                    del page, hits  # hold one page only: the batch, not the response beside it
                    sent += len(batch)
                    if batch:
                        yield batch
                    del batch
                    if last_page:
                        break
        finally:
            if skipped:
                log.warning(
                    "%s: skipped %d hits without a %s and a log",
                    self.backend,
                    skipped,
                    self.layout.timestamp_field,
                )
            try:
                await self._close_pit(pit_id)
            except Exception as e:  # the PIT expires after keep_alive anyway; never hide the first error
                failure = self._classify(e)
                if failure is None:
                    raise
                log.warning(
                    "%s %s: could not close point in time: %s",
                    self.backend,
                    self.endpoint,
                    self._redact(failure.reason),
                )

    async def ping(self) -> bool:
        try:
            return await self._ping_request()
        except Exception as e:
            if self._classify(e) is None:
                raise
            return False
