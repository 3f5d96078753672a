"""Contract tests of the OpenSearch log source against a local server speaking the OpenSearch wire format."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.contract.search_server import (
    T0,
    ListCorpus,
    Mapping,
    S,
    SearchServer,
    iso,
    make_docs,
    self_signed_certificate,
    server_tls,
    window,
)
from training_controller.adapters.logs.opensearch import OpenSearchLogSource
from training_controller.core.errors import PermanentError, SourceRejected, SourceUnavailable
from training_controller.core.queries import Interval, LogQuery, Workload


@pytest.fixture
async def cluster() -> AsyncIterator[Callable[..., Any]]:
    """Start a fake OpenSearch with some documents; returns (server, source-factory)."""
    servers: list[SearchServer] = []
    sources: list[OpenSearchLogSource] = []

    async def start(
        docs: list[dict[str, Any]], *, mapping: Mapping | None = None, tls: Any = None, **server_options: Any
    ):
        server = SearchServer(ListCorpus(docs, mapping or Mapping()), flavor="opensearch", **server_options)
        await server.start(ssl_context=tls)
        servers.append(server)

        def source(**options: Any) -> OpenSearchLogSource:
            options.setdefault("retry_base_delay", 0.001)
            src = OpenSearchLogSource(options.pop("endpoint", server.url), **options)
            sources.append(src)
            return src

        return server, source

    yield start
    for src in sources:
        await src.aclose()
    for server in servers:
        await server.stop()


async def collect(source: OpenSearchLogSource, query: LogQuery) -> list[list[dict[str, Any]]]:
    return [batch async for batch in source.stream(query)]


async def test_count_sends_the_translated_query_to_count_api_per_interval(cluster) -> None:
    server, source = await cluster(make_docs(100))

    assert await source().count(LogQuery(intervals=(window(0, 10), window(50, 55)))) == 15

    counts = server.of("count")
    assert [r.path for r in counts] == ["/logs/_count", "/logs/_count"]
    assert counts[0].body == {
        "query": {"bool": {"filter": [{"range": {"timestamp": {"gte": T0, "lt": T0 + 10 * S}}}]}}
    }
    assert counts[0].headers["content-type"] == "application/json"
    assert "compatible-with" not in counts[0].headers.get("accept", "")


async def test_stream_pages_with_pit_and_search_after_then_deletes_the_newest_pit(cluster) -> None:
    server, source = await cluster(make_docs(10))

    batches = await collect(source(page_size=3, keep_alive="30s"), LogQuery(intervals=(window(0, 100),)))

    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [d["log"] for b in batches for d in b] == [f"line {i}" for i in range(10)]
    (opened,) = server.of("open_pit")
    assert opened.method == "POST" and opened.path == "/logs/_search/point_in_time"
    assert opened.query == {"keep_alive": "30s"}
    searches = server.of("search")
    assert [r.path for r in searches] == ["/_search"] * 4
    # OpenSearch 2.x has no _shard_doc: the tiebreaker is _doc, stable within the point in time.
    assert searches[0].body["sort"] == [{"timestamp": {"order": "asc"}}, {"_doc": {"order": "asc"}}]
    assert searches[0].body["pit"]["keep_alive"] == "30s"
    assert [r.body["search_after"] for r in searches[1:]] == [
        [T0 + 2 * S, 2],
        [T0 + 5 * S, 5],
        [T0 + 8 * S, 8],
    ]
    ids = [r.body["pit"]["id"] for r in searches]
    assert len(set(ids)) == 4
    (closed,) = server.of("close_pit")
    assert closed.method == "DELETE" and closed.path == "/_search/point_in_time"
    assert len(closed.body["pit_id"]) == 1 and closed.body["pit_id"][0] not in ids
    assert server.live_pits == set(server.closed_pits)


async def test_opensearch_3_3_and_later_pages_with_the_shard_doc_tiebreaker(cluster) -> None:
    server, source = await cluster(make_docs(5), version="3.3.0")
    src = source(page_size=2)

    assert sum(map(len, await collect(src, LogQuery(intervals=(window(0, 9),))))) == 5
    assert sum(map(len, await collect(src, LogQuery(intervals=(window(0, 9),))))) == 5

    assert {json.dumps(r.body["sort"][1]) for r in server.of("search")} == {
        '{"_shard_doc": {"order": "asc"}}'
    }
    assert len(server.of("info")) == 1  # the version is asked once


async def test_a_configured_tiebreaker_is_used_without_asking_the_version(cluster) -> None:
    server, source = await cluster(make_docs(5), version="3.3.0")
    await collect(source(tiebreaker="_doc"), LogQuery(intervals=(window(0, 9),)))

    assert server.of("search")[0].body["sort"][1] == {"_doc": {"order": "asc"}}
    assert server.of("info") == []


async def test_documents_reach_the_core_with_int_ns_timestamp_str_log_and_other_fields(cluster) -> None:
    docs = make_docs(2)
    docs[1]["log"] = 12345
    docs[0]["kubernetes"] = {"pod_name": "web-1"}
    _, source = await cluster(docs)

    (batch,) = await collect(source(), LogQuery(intervals=(window(0, 10),)))

    assert batch[0]["timestamp"] == T0 and isinstance(batch[0]["timestamp"], int)
    assert batch[0]["kubernetes"] == {"pod_name": "web-1"}
    assert batch[1]["log"] == "12345"


@pytest.mark.parametrize("unit", ["ms", "s", "iso"])
async def test_timestamps_in_other_units_are_queried_in_that_unit_and_returned_in_ns(
    cluster, unit: str
) -> None:
    step = S if unit == "s" else 10**6 * 250
    server, source = await cluster(
        make_docs(8, step_ns=step, unit=unit, field="time"), mapping=Mapping("time", unit)
    )
    start, end = T0 + step, T0 + 5 * step

    batches = await collect(
        source(timestamp_field="time", timestamp_unit=unit),
        LogQuery(intervals=(Interval(start_ns=start, end_ns=end),)),
    )

    assert [d["timestamp"] for b in batches for d in b] == [T0 + i * step for i in range(1, 5)]
    bounds = server.of("search")[0].body["query"]["bool"]["filter"][0]["range"]["time"]
    if unit == "iso":
        assert bounds == {"gte": iso(start), "lt": iso(end), "format": "strict_date_optional_time_nanos"}
    else:
        factor = {"ms": 10**6, "s": 10**9}[unit]
        assert bounds == {"gte": start // factor, "lt": end // factor}


async def test_pit_is_deleted_when_the_consumer_stops_early(cluster) -> None:
    server, source = await cluster(make_docs(10))
    stream = source(page_size=2).stream(LogQuery(intervals=(window(0, 100),)))

    async for _ in stream:
        break
    await stream.aclose()

    assert len(server.of("search")) == 1
    assert len(server.of("close_pit")) == 1 and server.live_pits == set(server.closed_pits)


async def test_pit_is_deleted_when_an_abandoned_stream_is_collected(cluster) -> None:
    server, source = await cluster(make_docs(10))
    src = source(page_size=2)

    async def first_batch() -> list[dict[str, Any]]:
        async for batch in src.stream(LogQuery(intervals=(window(0, 100),))):
            return batch
        return []

    assert len(await first_batch()) == 2
    gc.collect()
    for _ in range(20):
        if server.of("close_pit"):
            break
        await asyncio.sleep(0.01)
    assert len(server.of("close_pit")) == 1


async def test_pit_is_deleted_when_a_page_fails_for_good(cluster) -> None:
    server, source = await cluster(make_docs(10))
    server.fail("search", 503, times=10)

    with pytest.raises(SourceUnavailable, match=r"OpenSearch .* search failed after 3 tries \(503\)"):
        await collect(source(page_size=4, max_tries=3), LogQuery(intervals=(window(0, 100),)))

    assert len(server.of("search")) == 3
    assert len(server.of("close_pit")) == 1 and server.live_pits == set(server.closed_pits)


async def test_pit_is_deleted_when_a_later_page_is_refused(cluster) -> None:
    server, source = await cluster(make_docs(10))
    stream = source(page_size=4).stream(LogQuery(intervals=(window(0, 100),)))
    await anext(stream)
    server.fail("search", 400)

    with pytest.raises(SourceRejected, match=r"OpenSearch refused search \(400\): parsing_exception"):
        await anext(stream)

    assert len(server.of("close_pit")) == 1 and server.live_pits == set(server.closed_pits)


async def test_basic_auth_sends_the_authorization_header(cluster) -> None:
    server, source = await cluster(make_docs(3), basic_auth=("admin", "s3cret"))

    src = source(username="admin", password=SecretStr("s3cret"))
    assert await src.count(LogQuery(intervals=(window(0, 9),))) == 3

    assert (
        server.of("count")[0].headers["authorization"]
        == "Basic " + base64.b64encode(b"admin:s3cret").decode()
    )


async def test_api_key_sends_the_apikey_header(cluster) -> None:
    server, source = await cluster(make_docs(3), api_key="a2V5aWQ6c2VjcmV0")
    batches = await collect(
        source(api_key=SecretStr("a2V5aWQ6c2VjcmV0")), LogQuery(intervals=(window(0, 9),))
    )

    assert sum(map(len, batches)) == 3
    assert {r.headers["authorization"] for r in server.requests} == {"ApiKey a2V5aWQ6c2VjcmV0"}


async def test_wrong_password_becomes_a_permanent_error_that_names_the_cause_not_the_password(
    cluster,
) -> None:
    server, source = await cluster(make_docs(3), basic_auth=("admin", "right"))

    with pytest.raises(PermanentError) as info:
        await source(username="admin", password="wr0ng-pa55").count(LogQuery(intervals=(window(0, 9),)))

    assert "OpenSearch refused count (401)" in str(info.value) and "security_exception" in str(info.value)
    assert "wr0ng-pa55" not in str(info.value)
    assert len(server.of("count")) == 1


async def test_tls_is_verified_against_the_ca_file_unless_turned_off_by_name(cluster, tmp_path: Path) -> None:
    pair = self_signed_certificate(tmp_path)
    if pair is None:
        pytest.skip("the openssl tool is not installed")
    _, source = await cluster(make_docs(3), tls=server_tls(*pair))
    query = LogQuery(intervals=(window(0, 9),))

    with pytest.raises(SourceRejected, match="TLS failed"):  # verification is on by default
        await source(max_tries=1).count(query)
    assert await source(ca_certs=str(pair[0])).count(query) == 3
    assert await source(verify_certs=False).count(query) == 3


@pytest.mark.parametrize("status", [503, 429, 502])
async def test_a_passing_failure_is_retried_then_succeeds(cluster, status: int) -> None:
    server, source = await cluster(make_docs(5))
    server.fail("count", status)
    server.fail("search", status)

    src = source(page_size=10)
    query = LogQuery(intervals=(window(0, 9),))
    assert await src.count(query) == 5
    assert sum(map(len, await collect(src, query))) == 5

    assert len(server.of("count")) == 2 and len(server.of("search")) == 2


async def test_backoff_grows_exponentially(cluster) -> None:
    server, source = await cluster(make_docs(5))
    server.fail("count", 503, times=3)

    started = time.monotonic()
    assert await source(retry_base_delay=0.05).count(LogQuery(intervals=(window(0, 9),))) == 5

    assert time.monotonic() - started >= 0.05 + 0.1 + 0.2


async def test_an_unreachable_cluster_becomes_source_unavailable_without_the_password(cluster) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, source = await cluster([])
    src = source(endpoint=f"http://admin:hunter2@127.0.0.1:{port}", max_tries=2)

    with pytest.raises(SourceUnavailable) as info:
        await src.count(LogQuery(intervals=(window(0, 9),)))

    assert str(info.value).startswith(
        f"OpenSearch at http://127.0.0.1:{port}: count failed after 2 tries (no answer)"
    )
    assert "hunter2" not in str(info.value)
    assert await src.ping() is False


async def test_ping_is_true_when_the_cluster_answers(cluster) -> None:
    server, source = await cluster(make_docs(1))
    assert await source().ping() is True
    assert server.of("info")[0].method == "HEAD"


async def test_workload_names_are_term_values_never_query_syntax(cluster) -> None:
    docs = make_docs(4)
    for doc, name in zip(docs, ["nginx*", "web OR db", 'say "hi"', "nginx-1"], strict=True):
        doc["deployment"] = name
    server, source = await cluster(docs)
    workloads = (
        Workload(deployment="nginx*"),
        Workload(deployment="web OR db"),
        Workload(deployment='say "hi"'),
    )

    batches = await collect(source(), LogQuery(intervals=(window(0, 9),), workloads=workloads))

    assert sorted(d["deployment"] for b in batches for d in b) == ["nginx*", 'say "hi"', "web OR db"]
    should = server.of("search")[0].body["query"]["bool"]["filter"][1]["bool"]["should"]
    assert [c["bool"]["filter"] for c in should] == [
        [{"term": {"deployment": {"value": "nginx*"}}}],
        [{"term": {"deployment": {"value": "web OR db"}}}],
        [{"term": {"deployment": {"value": 'say "hi"'}}}],
    ]


async def test_exclusions_become_must_not_with_the_keyword_suffix_on_term_fields(cluster) -> None:
    docs = make_docs(4)
    docs[1]["anomaly_level"] = "Anomaly"
    docs[2]["log"] = "fatal: out of memory"
    server, source = await cluster(docs)
    query = LogQuery(intervals=(window(0, 9),), exclude_anomalies=True, exclude_keywords=("fatal",))

    batches = await collect(source(keyword_suffix=".keyword"), query)

    assert [d["log"] for b in batches for d in b] == ["line 0", "line 3"]
    assert server.of("search")[0].body["query"]["bool"]["must_not"] == [
        {"term": {"anomaly_level.keyword": {"value": "Anomaly"}}},
        {"match_phrase": {"log": "fatal"}},
    ]


async def test_cap_is_shared_across_two_intervals_in_proportion_to_their_counts(cluster) -> None:
    server, source = await cluster(make_docs(100))

    batches = await collect(
        source(page_size=4), LogQuery(intervals=(window(0, 30), window(50, 60)), max_documents=8)
    )

    assert [d["log"] for b in batches for d in b] == [f"line {i}" for i in range(6)] + ["line 50", "line 51"]
    assert [r.body["size"] for r in server.of("search")] == [4, 2, 2]
    assert len(server.of("close_pit")) == 1 and server.live_pits == set(server.closed_pits)


async def test_a_missing_index_is_a_permanent_error_with_the_servers_reason(cluster) -> None:
    server, source = await cluster(make_docs(3))

    with pytest.raises(
        SourceRejected, match=r"refused count \(404\): index_not_found_exception: no such index \[other\]"
    ):
        await source(index="other").count(LogQuery(intervals=(window(0, 9),)))
    assert len(server.of("count")) == 1
