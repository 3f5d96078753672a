"""What the Elasticsearch and OpenSearch log sources share: paging, the cap, retries, credentials, errors.

The two backends page the same way (a point in time, `search_after`, a tiebreaker), but their official
clients differ and the elasticsearch client ≥ 8 refuses to talk to OpenSearch. So the paging loop, the
division of the cap between intervals and the retry policy live here once (the query itself is
`search_query`); each adapter only makes its client, wraps its calls and sorts its exceptions into "retry"
and "do not retry". Secrets never reach a message: URLs lose their user and password, and passwords and
keys are blanked out of the servers' reasons.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from training_controller.adapters.logs.search_query import (
    TIMESTAMP_UNITS,
    IndexLayout,
    TimestampUnit,
    allocate_cap,
    interval_query,
    value_to_ns,
)
from training_controller.core.errors import SourceRejected, SourceUnavailable
from training_controller.core.ports import LogDocument, LogSource
from training_controller.core.queries import LogQuery

log = logging.getLogger(__name__)

T = TypeVar("T")


# --- credentials and error messages ---------------------------------------------------------------------


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

    @classmethod
    def of_answer(cls, status: int, body: Any, fallback: str) -> Failure:
        """An error the server answered with: retried if its status may pass, with the body's reason."""
        return cls(retryable_status(status), status, error_reason(body, fallback))


class SearchLogSource(LogSource, abc.ABC):
    """A log source on a search backend: PIT + search_after paging, the cap, retries (shared by ES and OS)."""

    backend = "search backend"
    # Options of both clients that turn their own retries off: this class retries, with its own policy.
    CLIENT_RETRIES_OFF: dict[str, Any] = {"max_retries": 0, "retry_on_status": (), "retry_on_timeout": False}

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

    def _queries(self, query: LogQuery) -> list[dict[str, Any]]:
        """The query DSL to run: one per interval, or the search body a request gave, as it is (Opni's
        training query), within the same cap and the same paging."""
        if query.search is not None:
            return [query.search.get("query", query.search)]
        return [interval_query(query, interval, self.layout) for interval in query.intervals]

    async def _interval_counts(self, query: LogQuery) -> list[int]:
        counts = []
        for dsl in self._queries(query):
            counts.append(await self._call("count", lambda dsl=dsl: self._count_request(dsl)))
        return counts

    async def count(self, query: LogQuery) -> int:
        return sum(await self._interval_counts(query))

    def _document(self, hit: dict[str, Any]) -> LogDocument | None:
        """A hit as the core wants it: `timestamp` in int nanoseconds, `log` a string, the rest as stored."""
        doc = hit.get("_source") or {}  # the page is ours: its documents are changed where they are
        try:
            value = doc[self.layout.timestamp_field]
            if type(value) is not int or self.layout.timestamp_unit != "ns":  # else it is as the core wants it
                value = value_to_ns(value, self.layout.timestamp_unit)
            doc["timestamp"] = value
            if doc.get("log") is None:
                return None
            if not isinstance(doc["log"], str):
                doc["log"] = str(doc["log"])
        except (KeyError, ValueError, TypeError, OverflowError):
            return None
        return doc

    async def stream(self, query: LogQuery) -> AsyncIterator[list[LogDocument]]:
        shares: list[int | None]
        queries = self._queries(query)
        if query.max_documents is None:
            shares = [None] * len(queries)
        else:
            shares = list(allocate_cap(query.max_documents, await self._interval_counts(query)))
        if all(share == 0 for share in shares):
            return
        tiebreaker = await self._call("version check", self._tiebreaker)
        sort = [{self.layout.timestamp_field: {"order": "asc"}}, {tiebreaker: {"order": "asc"}}]
        pit_id = await self._call("open point in time", self._open_pit)
        skipped = 0
        try:
            for dsl, share in zip(queries, shares, strict=True):
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
