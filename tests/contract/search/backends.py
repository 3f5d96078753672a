"""The two search backends as the contract tests see them: what differs on the wire, and a fake cluster of each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from tests.contract.search_corpus import ListCorpus, Mapping
from tests.contract.search_server import SearchServer
from training_controller.adapters.logs.elasticsearch import ElasticsearchLogSource
from training_controller.adapters.logs.opensearch import OpenSearchLogSource
from training_controller.adapters.logs.search_source import SearchLogSource
from training_controller.core.queries import LogQuery


@dataclass(frozen=True)
class Backend:
    """What differs between the two on the wire, as the tests see it."""

    flavor: str
    name: str
    source: type[SearchLogSource]
    open_pit_path: str
    close_pit_path: str
    tiebreaker: str  # the one the server's default version takes
    ping_method: str

    def closed_ids(self, body: dict[str, Any]) -> list[str]:
        return [body["id"]] if self.flavor == "elasticsearch" else list(body["pit_id"])


ELASTICSEARCH = Backend("elasticsearch", "Elasticsearch", ElasticsearchLogSource, "/logs/_pit", "/_pit", "_shard_doc", "GET")
OPENSEARCH = Backend(
    "opensearch", "OpenSearch", OpenSearchLogSource, "/logs/_search/point_in_time", "/_search/point_in_time", "_doc",
    "HEAD",
)


async def clusters(backend: Backend) -> AsyncIterator[Callable[..., Any]]:
    """Starts fake clusters of the backend with given documents: `start(docs) -> (server, source-factory)`;
    stops them and closes their sources afterwards."""
    servers: list[SearchServer] = []
    sources: list[SearchLogSource] = []

    async def start(
        docs: list[dict[str, Any]], *, mapping: Mapping | None = None, tls: Any = None, **server_options: Any
    ):
        server = SearchServer(ListCorpus(docs, mapping or Mapping()), flavor=backend.flavor, **server_options)
        await server.start(ssl_context=tls)
        servers.append(server)

        def source(**options: Any) -> SearchLogSource:
            options.setdefault("retry_base_delay", 0.001)
            src = backend.source(options.pop("endpoint", server.url), **options)
            sources.append(src)
            return src

        return server, source

    yield start
    for src in sources:
        await src.aclose()
    for server in servers:
        await server.stop()


async def collect(source: SearchLogSource, query: LogQuery) -> list[list[dict[str, Any]]]:
    return [batch async for batch in source.stream(query)]


def logs(batches: list[list[dict[str, Any]]]) -> list[str]:
    return [d["log"] for b in batches for d in b]
