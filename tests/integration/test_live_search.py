"""The Elasticsearch and OpenSearch log sources against real clusters.

Runs when `ELASTICSEARCH_URL` / `OPENSEARCH_URL` names one (user and password in the URL, or
`*_USERNAME` / `*_PASSWORD`; `*_API_KEY`; `*_CA_CERTS`; `*_VERIFY_CERTS=false` to skip certificate checks),
in a temporary index that it deletes afterwards; skipped with that reason otherwise. The contract tests
cover the wire format against a local server; these catch what only a real cluster does (mappings, PIT ids,
the tiebreaker each version accepts).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from training_controller.core.queries import Interval, LogQuery, Workload

T0 = 1_617_037_200 * 10**9  # 2021-03-29 17:00 UTC
S = 10**9
MAPPING = {
    "properties": {
        "timestamp": {"type": "long"},
        "log": {"type": "text"},
        "cluster_id": {"type": "keyword"},
        "namespace_name": {"type": "keyword"},
        "deployment": {"type": "keyword"},
        "anomaly_level": {"type": "keyword"},
    }
}


def _docs() -> list[dict[str, Any]]:
    docs = []
    for i in range(25):
        docs.append(
            {
                "timestamp": T0 + i * S,
                "log": "fatal: disk full" if i == 3 else f"GET /items/{i} 200",
                "cluster_id": "c1",
                "namespace_name": "default",
                "deployment": "nginx*" if i % 5 == 0 else "web",
                "anomaly_level": "Anomaly" if i == 7 else "Normal",
            }
        )
    docs[24]["timestamp"] = docs[23]["timestamp"]  # a tie the tiebreaker has to page through
    return docs


def _options(prefix: str) -> dict[str, Any]:
    env = os.environ
    options: dict[str, Any] = {
        "verify_certs": env.get(f"{prefix}_VERIFY_CERTS", "").lower() not in ("0", "false", "no")
    }
    for name, key in (
        ("username", "USERNAME"),
        ("password", "PASSWORD"),
        ("api_key", "API_KEY"),
        ("ca_certs", "CA_CERTS"),
    ):
        if env.get(f"{prefix}_{key}"):
            options[name] = env[f"{prefix}_{key}"]
    return options


async def _check(source: Any) -> None:
    query = LogQuery(
        intervals=(
            Interval(start_ns=T0, end_ns=T0 + 10 * S),
            Interval(start_ns=T0 + 20 * S, end_ns=T0 + 30 * S),
        )
    )
    assert await source.ping() is True
    assert await source.count(query) == 15

    docs = [d for batch in [b async for b in source.stream(query)] for d in batch]
    assert [d["timestamp"] for d in docs] == sorted(d["timestamp"] for d in docs)
    assert len(docs) == 15 and all(
        isinstance(d["timestamp"], int) and isinstance(d["log"], str) for d in docs
    )

    filtered = LogQuery(
        intervals=query.intervals,
        workloads=(Workload(deployment="nginx*"),),
        exclude_anomalies=True,
        exclude_keywords=("fatal",),
    )
    assert await source.count(filtered) == 3  # documents 0, 5 and 20: a literal `nginx*`, no wildcard
    assert [d["timestamp"] for b in [b async for b in source.stream(filtered)] for d in b] == [
        T0,
        T0 + 5 * S,
        T0 + 20 * S,
    ]
    capped = LogQuery(intervals=query.intervals, max_documents=6)
    assert sum([len(b) async for b in source.stream(capped)]) == 6  # 4 of the first interval's 10, 2 of the 5


async def _check_in_temporary_index(
    admin: Any, source: Any, index: str, *, create: dict[str, Any], document: str
) -> None:
    """Fill `index` through the backend's own client (`document`: its keyword for a document), check the
    source against it, then delete it and close both clients."""
    try:
        await admin.indices.create(index=index, **create)
        for n, doc in enumerate(_docs()):
            await admin.index(index=index, id=str(n), **{document: doc})
        await admin.indices.refresh(index=index)
        await _check(source)
    finally:
        await admin.indices.delete(index=index, ignore_unavailable=True)
        await source.aclose()
        await admin.close()


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("ELASTICSEARCH_URL"), reason="ELASTICSEARCH_URL is not set")
async def test_elasticsearch_counts_and_streams_a_temporary_index() -> None:
    from elasticsearch import AsyncElasticsearch

    from training_controller.adapters.logs.elasticsearch import ElasticsearchLogSource

    url, options = os.environ["ELASTICSEARCH_URL"], _options("ELASTICSEARCH")
    index = f"tc-live-{uuid.uuid4().hex[:8]}"
    auth: dict[str, Any] = {"verify_certs": options["verify_certs"], "ca_certs": options.get("ca_certs")}
    if "username" in options:
        auth["basic_auth"] = (options["username"], options["password"])
    if "api_key" in options:
        auth["api_key"] = options["api_key"]
    admin = AsyncElasticsearch(url, **auth)
    source = ElasticsearchLogSource(url, index=index, page_size=4, **options)
    create = {"mappings": MAPPING, "settings": {"number_of_shards": 2}}
    await _check_in_temporary_index(admin, source, index, create=create, document="document")


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("OPENSEARCH_URL"), reason="OPENSEARCH_URL is not set")
async def test_opensearch_counts_and_streams_a_temporary_index() -> None:
    from opensearchpy import AsyncOpenSearch

    from training_controller.adapters.logs.opensearch import OpenSearchLogSource

    url, options = os.environ["OPENSEARCH_URL"], _options("OPENSEARCH")
    index = f"tc-live-{uuid.uuid4().hex[:8]}"
    auth: dict[str, Any] = {"verify_certs": options["verify_certs"], "ssl_show_warn": False}
    if options.get("ca_certs"):
        auth["ca_certs"] = options["ca_certs"]
    if "username" in options:
        auth["http_auth"] = (options["username"], options["password"])
    admin = AsyncOpenSearch(hosts=[url], **auth)
    source = OpenSearchLogSource(url, index=index, page_size=4, **options)
    create = {"body": {"mappings": MAPPING, "settings": {"number_of_shards": 2}}}
    await _check_in_temporary_index(admin, source, index, create=create, document="body")
