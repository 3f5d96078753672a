"""The `opensearch` log source: Opni's `logs` index on OpenSearch through `opensearch-py`'s async client.

The elasticsearch client ≥ 8 refuses to talk to OpenSearch (no `X-Elastic-Product` header), so OpenSearch
gets its own client; everything else (query DSL, paging, the cap, retries) is `SearchLogSource`, shared with
the Elasticsearch source. OpenSearch's point in time lives under `/<index>/_search/point_in_time` (2.4+).
Its `_shard_doc` tiebreaker only exists from 3.3; on older clusters the tiebreaker is `_doc`, which a point
in time keeps stable per shard. The choice is made from the cluster's version once, unless configured.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiohttp import ClientSSLError
from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import (
    ConnectionError as OpenSearchConnectionError,
)
from opensearchpy.exceptions import (
    SerializationError,
    SSLError,
    TransportError,
)

from training_controller.adapters.logs.search_source import Credentials, Failure, SearchLogSource

log = logging.getLogger(__name__)

SHARD_DOC_SINCE = (3, 3)


def _version(number: str) -> tuple[int, int]:
    parts = (number.split("-")[0].split(".") + ["0", "0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return (0, 0)


class OpenSearchLogSource(SearchLogSource):
    """Log documents from an OpenSearch index (point in time + search_after)."""

    name = "opensearch"
    backend = "OpenSearch"

    def __init__(self, endpoint: str, *, tiebreaker: str | None = None, **options: Any) -> None:
        """As SearchLogSource; `tiebreaker` overrides the one picked from the cluster's version."""
        self._tiebreak = tiebreaker
        super().__init__(endpoint, **options)

    def _connect(
        self, endpoint: str, auth: Credentials, *, ca_certs: str | None, verify_certs: bool, request_timeout: float
    ) -> None:
        options: dict[str, Any] = {
            "timeout": request_timeout,
            "verify_certs": verify_certs,
            "ssl_show_warn": verify_certs,
            **self.CLIENT_RETRIES_OFF,
        }
        if ca_certs:
            options["ca_certs"] = ca_certs
        if auth.username and auth.password:
            options["http_auth"] = (auth.username, auth.password)
        if auth.api_key:
            # The security plugin's API tokens and proxies in front of OpenSearch take the Elasticsearch form.
            options["headers"] = {"authorization": f"ApiKey {auth.api_key}"}
        self._client = AsyncOpenSearch(hosts=[endpoint], **options)

    def _classify(self, exc: Exception) -> Failure | None:
        if isinstance(exc, SSLError) or (
            isinstance(exc, OpenSearchConnectionError) and isinstance(exc.info, ssl.SSLError | ClientSSLError)
        ):
            return Failure(False, None, f"TLS failed ({exc.error}); check the CA file or the endpoint")
        if isinstance(exc, OpenSearchConnectionError):  # also ConnectionTimeout
            return Failure(True, None, f"{type(exc).__name__}: {exc.info!r}")
        if isinstance(exc, TransportError):
            if isinstance(exc.status_code, int):
                return Failure.of_answer(exc.status_code, exc.info, str(exc.error))
            return Failure(True, None, str(exc.error))
        if isinstance(exc, SerializationError):
            return Failure(True, None, f"unreadable answer: {exc}")
        return None

    async def _tiebreaker(self) -> str:
        if self._tiebreak is None:
            info = await self._client.info()
            number = str(info.get("version", {}).get("number", "0.0"))
            self._tiebreak = "_shard_doc" if _version(number) >= SHARD_DOC_SINCE else "_doc"
            log.info(
                "OpenSearch %s is version %s: paging with tiebreaker %s",
                self.endpoint,
                number,
                self._tiebreak,
            )
        return self._tiebreak

    async def _count_request(self, query: dict[str, Any]) -> int:
        response = await self._client.count(index=self.layout.index, body={"query": query})
        return int(response["count"])

    async def _open_pit(self) -> str:
        response = await self._client.create_pit(
            index=self.layout.index, params={"keep_alive": self.keep_alive}
        )
        return str(response["pit_id"])

    async def _search_request(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._client.search(body=body)

    async def _close_pit(self, pit_id: str) -> None:
        await self._client.delete_pit(body={"pit_id": [pit_id]})

    async def _ping_request(self) -> bool:
        return bool(await self._client.ping())

    async def aclose(self) -> None:
        await self._client.close()
