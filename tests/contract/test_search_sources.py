"""Contract tests of the Elasticsearch and OpenSearch log sources against a local server that speaks each wire
format (`search_server.py`).

Most behaviour is the same for both and is tested once per backend (`backend` fixture); what only one of
them does follows in its own section.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gc
import json
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
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
    make_docs,
    self_signed_certificate,
    server_tls,
    window,
)
from training_controller.adapters.export.process import ProcessExporter
from training_controller.adapters.logs.elasticsearch import ElasticsearchLogSource
from training_controller.adapters.logs.opensearch import OpenSearchLogSource
from training_controller.adapters.logs.search_query import allocate_cap, iso_to_ns, ns_to_iso
from training_controller.adapters.logs.search_source import SearchLogSource
from training_controller.adapters.storage.local import LocalObjectStore
from training_controller.core.errors import PermanentError, SourceRejected, SourceUnavailable
from training_controller.core.queries import Interval, LogQuery, Workload

REPO = Path(__file__).resolve().parents[2]


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


async def _cluster(backend: Backend) -> AsyncIterator[Callable[..., Any]]:
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


@pytest.fixture(params=[ELASTICSEARCH, OPENSEARCH], ids=lambda b: b.flavor)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture
async def cluster(backend: Backend) -> AsyncIterator[Callable[..., Any]]:
    """Start a fake cluster of the backend with some documents; returns (server, source-factory)."""
    async for start in _cluster(backend):
        yield start


@pytest.fixture
async def elasticsearch() -> AsyncIterator[Callable[..., Any]]:
    async for start in _cluster(ELASTICSEARCH):
        yield start


@pytest.fixture
async def opensearch() -> AsyncIterator[Callable[..., Any]]:
    async for start in _cluster(OPENSEARCH):
        yield start


async def collect(source: SearchLogSource, query: LogQuery) -> list[list[dict[str, Any]]]:
    return [batch async for batch in source.stream(query)]


def logs(batches: list[list[dict[str, Any]]]) -> list[str]:
    return [d["log"] for b in batches for d in b]


# --- count -----------------------------------------------------------------------------------------------


async def test_count_sends_the_translated_query_to_count_api_per_interval(cluster) -> None:
    server, source = await cluster(make_docs(100))

    assert await source().count(LogQuery(intervals=(window(0, 10), window(50, 55)))) == 15

    counts = server.of("count")
    assert [(r.method, r.path) for r in counts] == [("POST", "/logs/_count")] * 2
    assert counts[0].body == {
        "query": {"bool": {"filter": [{"range": {"timestamp": {"gte": T0, "lt": T0 + 10 * S}}}]}}
    }
    assert counts[1].body["query"]["bool"]["filter"][0]["range"]["timestamp"] == {
        "gte": T0 + 50 * S,
        "lt": T0 + 55 * S,
    }


# --- stream: point in time and search_after ------------------------------------------------------------


async def test_stream_pages_with_pit_and_search_after_then_closes_the_newest_pit(cluster, backend) -> None:
    server, source = await cluster(make_docs(10))

    batches = await collect(source(page_size=3, keep_alive="30s"), LogQuery(intervals=(window(0, 100),)))

    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert logs(batches) == [f"line {i}" for i in range(10)]
    (opened,) = server.of("open_pit")
    assert (opened.method, opened.path, opened.query) == ("POST", backend.open_pit_path, {"keep_alive": "30s"})
    searches = server.of("search")
    assert [r.path for r in searches] == ["/_search"] * 4
    first = searches[0].body
    assert first["sort"] == [{"timestamp": {"order": "asc"}}, {backend.tiebreaker: {"order": "asc"}}]
    assert first["size"] == 3 and "search_after" not in first
    assert first["pit"]["keep_alive"] == "30s"
    assert first["query"] == {"bool": {"filter": [{"range": {"timestamp": {"gte": T0, "lt": T0 + 100 * S}}}]}}
    # Every page continues after the last sort values of the one before, with the newest PIT id.
    assert [r.body["search_after"] for r in searches[1:]] == [[T0 + 2 * S, 2], [T0 + 5 * S, 5], [T0 + 8 * S, 8]]
    ids = [r.body["pit"]["id"] for r in searches]
    assert len(set(ids)) == 4
    (closed,) = server.of("close_pit")
    assert (closed.method, closed.path) == ("DELETE", backend.close_pit_path)
    (closed_id,) = backend.closed_ids(closed.body)
    assert closed_id not in ids  # the id the last page answered with
    assert server.live_pits == set(server.closed_pits)


async def test_stream_takes_the_intervals_in_order_under_one_pit(cluster) -> None:
    server, source = await cluster(make_docs(100))
    batches = await collect(source(page_size=50), LogQuery(intervals=(window(60, 63), window(10, 12))))

    assert [[d["log"] for d in b] for b in batches] == [["line 60", "line 61", "line 62"], ["line 10", "line 11"]]
    assert len(server.of("open_pit")) == 1 and len(server.of("close_pit")) == 1


async def test_documents_reach_the_core_with_int_ns_timestamp_str_log_and_other_fields(cluster) -> None:
    docs = make_docs(2)
    docs[1]["log"] = 12345
    docs[0]["kubernetes"] = {"pod_name": "web-1"}
    _, source = await cluster(docs)

    (batch,) = await collect(source(), LogQuery(intervals=(window(0, 10),)))

    assert batch[0]["timestamp"] == T0 and isinstance(batch[0]["timestamp"], int)
    assert batch[0]["kubernetes"] == {"pod_name": "web-1"} and batch[0]["deployment"] == "web"
    assert batch[1]["log"] == "12345"


@pytest.mark.parametrize("unit", ["ms", "s", "iso"])
async def test_timestamps_in_other_units_are_queried_in_that_unit_and_returned_in_ns(cluster, unit: str) -> None:
    # Milliseconds apart, so the ms and iso cases show that sub-second bounds are kept.
    step = S if unit == "s" else 10**6 * 250
    docs = make_docs(8, step_ns=step, unit=unit, field="@timestamp")
    server, source = await cluster(docs, mapping=Mapping("@timestamp", unit))
    start, end = T0 + step, T0 + 5 * step  # documents 1..4

    batches = await collect(
        source(timestamp_field="@timestamp", timestamp_unit=unit),
        LogQuery(intervals=(Interval(start_ns=start, end_ns=end),)),
    )

    assert [d["timestamp"] for b in batches for d in b] == [T0 + i * step for i in range(1, 5)]
    bounds = server.of("search")[0].body["query"]["bool"]["filter"][0]["range"]["@timestamp"]
    if unit == "iso":
        assert bounds == {"gte": ns_to_iso(start), "lt": ns_to_iso(end), "format": "strict_date_optional_time_nanos"}
    else:
        factor = {"ms": 10**6, "s": 10**9}[unit]
        assert bounds == {"gte": start // factor, "lt": end // factor}
    assert server.of("search")[0].body["sort"][0] == {"@timestamp": {"order": "asc"}}


def test_iso_dates_keep_nanoseconds_and_zones() -> None:
    assert iso_to_ns("2021-03-29T17:00:00.123456789Z") == T0 + 123_456_789
    assert iso_to_ns("2021-03-29T19:00:00.5+02:00") == T0 + 500_000_000
    assert iso_to_ns("2021-03-29T17:00:00") == T0
    assert iso_to_ns(ns_to_iso(T0 + 7)) == T0 + 7


# --- the PIT is closed on every way out ----------------------------------------------------------------


async def test_pit_is_closed_when_the_consumer_stops_early(cluster) -> None:
    server, source = await cluster(make_docs(10))
    stream = source(page_size=2).stream(LogQuery(intervals=(window(0, 100),)))

    async for _ in stream:
        break
    await stream.aclose()

    assert len(server.of("search")) == 1
    assert len(server.of("close_pit")) == 1 and server.live_pits == set(server.closed_pits)


async def test_pit_is_closed_when_an_abandoned_stream_is_collected(cluster) -> None:
    server, source = await cluster(make_docs(10))
    src = source(page_size=2)

    async def first_batch() -> list[dict[str, Any]]:
        async for batch in src.stream(LogQuery(intervals=(window(0, 100),))):
            return batch
        return []

    assert len(await first_batch()) == 2
    gc.collect()
    for _ in range(20):  # asyncio closes a dropped async generator in a task of its own
        if server.of("close_pit"):
            break
        await asyncio.sleep(0.01)
    assert len(server.of("close_pit")) == 1


async def test_pit_is_closed_when_a_page_fails_for_good(cluster, backend) -> None:
    server, source = await cluster(make_docs(10))
    server.fail("search", 503, times=10)

    with pytest.raises(SourceUnavailable, match=rf"{backend.name} .* search failed after 3 tries \(503\)"):
        await collect(source(page_size=4, max_tries=3), LogQuery(intervals=(window(0, 100),)))

    assert len(server.of("search")) == 3
    assert len(server.of("close_pit")) == 1 and server.live_pits == set(server.closed_pits)


async def test_pit_is_closed_when_a_later_page_is_refused(cluster, backend) -> None:
    server, source = await cluster(make_docs(10))
    stream = source(page_size=4).stream(LogQuery(intervals=(window(0, 100),)))
    first = await anext(stream)
    server.fail("search", 400)

    with pytest.raises(SourceRejected, match=rf"{backend.name} refused search \(400\): parsing_exception"):
        await anext(stream)

    assert len(first) == 4
    assert len(server.of("close_pit")) == 1 and server.live_pits == set(server.closed_pits)


# --- authentication and TLS ----------------------------------------------------------------------------


async def test_basic_auth_sends_the_authorization_header(cluster) -> None:
    server, source = await cluster(make_docs(3), basic_auth=("elastic", "s3cret"))

    src = source(username="elastic", password=SecretStr("s3cret"))
    assert await src.count(LogQuery(intervals=(window(0, 9),))) == 3

    expected = "Basic " + base64.b64encode(b"elastic:s3cret").decode()
    assert server.of("count")[0].headers["authorization"] == expected


def test_credentials_are_basic_auth_or_an_api_key_never_half_of_one(backend) -> None:
    with pytest.raises(ValueError, match="not both"):
        backend.source("http://es:9200", username="elastic", password="x", api_key="k")
    with pytest.raises(ValueError, match="both a username and a password"):
        backend.source("http://es:9200", username="elastic")


@pytest.mark.parametrize("key", ["a2V5aWQ6c2VjcmV0", SecretStr("a2V5aWQ6c2VjcmV0")], ids=["str", "SecretStr"])
async def test_api_key_sends_the_apikey_header(cluster, key: str | SecretStr) -> None:
    server, source = await cluster(make_docs(3), api_key="a2V5aWQ6c2VjcmV0")
    batches = await collect(source(api_key=key), LogQuery(intervals=(window(0, 9),)))

    assert sum(map(len, batches)) == 3
    assert {r.headers["authorization"] for r in server.requests} == {"ApiKey a2V5aWQ6c2VjcmV0"}


async def test_wrong_password_becomes_a_permanent_error_that_names_the_cause_not_the_password(
    cluster, backend
) -> None:
    server, source = await cluster(make_docs(3), basic_auth=("elastic", "right"))

    with pytest.raises(PermanentError) as info:
        await source(username="elastic", password="wr0ng-pa55").count(LogQuery(intervals=(window(0, 9),)))

    message = str(info.value)
    assert f"{backend.name} refused count (401)" in message and "security_exception" in message
    assert "wr0ng-pa55" not in message
    assert len(server.of("count")) == 1  # a 401 is not retried


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


# --- retries ---------------------------------------------------------------------------------------------


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
    assert len(server.of("count")) == 4


async def test_an_unreachable_cluster_becomes_source_unavailable_without_the_password(cluster, backend) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, source = await cluster([])
    src = source(endpoint=f"http://elastic:hunter2@127.0.0.1:{port}", max_tries=2)

    with pytest.raises(SourceUnavailable) as info:
        await src.count(LogQuery(intervals=(window(0, 9),)))

    message = str(info.value)
    assert message.startswith(f"{backend.name} at http://127.0.0.1:{port}: count failed after 2 tries (no answer)")
    assert "hunter2" not in message
    assert await src.ping() is False


async def test_ping_is_true_when_the_cluster_answers(cluster, backend) -> None:
    server, source = await cluster(make_docs(1))

    assert await source().ping() is True
    assert server.of("info")[0].method == backend.ping_method


# --- query translation -----------------------------------------------------------------------------------


async def test_workload_names_are_term_values_never_query_syntax(cluster) -> None:
    docs = make_docs(4)
    for doc, name in zip(docs, ["nginx*", "web OR db", 'say "hi"', "nginx-1"], strict=True):
        doc["deployment"] = name
    server, source = await cluster(docs)
    workloads = (
        Workload(cluster_id="c1", namespace_name="default", deployment="nginx*"),
        Workload(cluster_id="c1", deployment="web OR db"),
        Workload(deployment='say "hi"'),
    )

    batches = await collect(source(), LogQuery(intervals=(window(0, 9),), workloads=workloads))

    assert sorted(d["deployment"] for b in batches for d in b) == ["nginx*", 'say "hi"', "web OR db"]
    workload_filter = server.of("search")[0].body["query"]["bool"]["filter"][1]
    assert workload_filter == {
        "bool": {
            "minimum_should_match": 1,
            "should": [
                {
                    "bool": {
                        "filter": [
                            {"term": {"cluster_id": {"value": "c1"}}},
                            {"term": {"namespace_name": {"value": "default"}}},
                            {"term": {"deployment": {"value": "nginx*"}}},
                        ]
                    }
                },
                {
                    "bool": {
                        "filter": [
                            {"term": {"cluster_id": {"value": "c1"}}},
                            {"term": {"deployment": {"value": "web OR db"}}},
                        ]
                    }
                },
                {"bool": {"filter": [{"term": {"deployment": {"value": 'say "hi"'}}}]}},
            ],
        }
    }
    assert "query_string" not in json.dumps(server.of("search")[0].body)


async def test_exclusions_become_must_not_with_the_keyword_suffix_on_term_fields(cluster) -> None:
    docs = make_docs(5)
    docs[1]["anomaly_level"] = "Anomaly"
    docs[2]["log"] = "Connection Refused by upstream"
    docs[3]["log"] = "fatal: out of memory"
    server, source = await cluster(docs)
    query = LogQuery(
        intervals=(window(0, 9),),
        workloads=(Workload(deployment="web"),),
        exclude_anomalies=True,
        exclude_keywords=("connection refused", "fatal"),
    )

    batches = await collect(source(keyword_suffix=".keyword"), query)

    assert logs(batches) == ["line 0", "line 4"]
    body = server.of("search")[0].body["query"]["bool"]
    assert body["must_not"] == [
        {"term": {"anomaly_level.keyword": {"value": "Anomaly"}}},
        {"match_phrase": {"log": "connection refused"}},
        {"match_phrase": {"log": "fatal"}},
    ]
    assert body["filter"][1]["bool"]["should"] == [
        {"bool": {"filter": [{"term": {"deployment.keyword": {"value": "web"}}}]}}
    ]


async def test_a_missing_index_is_a_permanent_error_with_the_servers_reason(cluster) -> None:
    server, source = await cluster(make_docs(3))

    with pytest.raises(
        SourceRejected, match=r"refused count \(404\): index_not_found_exception: no such index \[other\]"
    ):
        await source(index="other").count(LogQuery(intervals=(window(0, 9),)))
    assert len(server.of("count")) == 1


# --- the cap ---------------------------------------------------------------------------------------------


def test_cap_is_divided_in_proportion_with_the_remainder_to_the_largest_fractions() -> None:
    assert allocate_cap(8, [30, 10]) == [6, 2]
    assert allocate_cap(10, [1, 1, 1]) == [1, 1, 1]
    assert allocate_cap(2, [1, 1, 1]) == [1, 1, 0]
    assert allocate_cap(5, [7, 0, 3]) == [4, 0, 1]  # 3.5 / 1.5: the tie goes to the earlier interval
    assert allocate_cap(None, [4, 5]) == [4, 5]
    for cap in range(1, 40):
        shares = allocate_cap(cap, [17, 3, 9])
        assert sum(shares) == min(cap, 29) and all(s <= c for s, c in zip(shares, [17, 3, 9], strict=True))


async def test_cap_is_shared_across_two_intervals_in_proportion_to_their_counts(cluster) -> None:
    server, source = await cluster(make_docs(100))
    query = LogQuery(intervals=(window(0, 30), window(50, 60)), max_documents=8)

    batches = await collect(source(page_size=4), query)

    assert logs(batches) == [f"line {i}" for i in range(6)] + ["line 50", "line 51"]
    assert len(server.of("count")) == 2
    assert [r.body["size"] for r in server.of("search")] == [4, 2, 2]
    assert len(server.of("close_pit")) == 1 and server.live_pits == set(server.closed_pits)


async def test_cap_larger_than_the_matches_streams_everything(cluster) -> None:
    _, source = await cluster(make_docs(10))
    batches = await collect(source(page_size=4), LogQuery(intervals=(window(0, 100),), max_documents=1000))
    assert sum(map(len, batches)) == 10


# --- Elasticsearch only ------------------------------------------------------------------------------------


async def test_elasticsearch_requests_carry_the_version_9_compatibility_headers(elasticsearch) -> None:
    server, source = await elasticsearch(make_docs(3))
    await source().count(LogQuery(intervals=(window(0, 10),)))

    headers = server.of("count")[0].headers
    assert headers["accept"] == "application/vnd.elasticsearch+json; compatible-with=9"
    assert headers["content-type"] == "application/vnd.elasticsearch+json; compatible-with=9"


async def test_elasticsearch_responses_carry_the_product_header_the_client_requires(elasticsearch) -> None:
    _, source = await elasticsearch(make_docs(3))

    info = await source()._client.info()

    assert info.meta.headers["x-elastic-product"] == "Elasticsearch"
    assert info.meta.headers["content-type"] == "application/vnd.elasticsearch+json;compatible-with=9"


async def test_a_server_that_is_not_elasticsearch_is_refused_clearly(opensearch) -> None:
    server, _ = await opensearch(make_docs(3))
    src = ElasticsearchLogSource(server.url, retry_base_delay=0.001)
    try:
        with pytest.raises(SourceRejected, match="not Elasticsearch.*opensearch log source"):
            await src.count(LogQuery(intervals=(window(0, 9),)))
    finally:
        await src.aclose()


# --- OpenSearch only -------------------------------------------------------------------------------------


async def test_opensearch_requests_carry_plain_json_headers(opensearch) -> None:
    server, source = await opensearch(make_docs(3))
    await source().count(LogQuery(intervals=(window(0, 10),)))

    headers = server.of("count")[0].headers
    assert headers["content-type"] == "application/json"
    assert "compatible-with" not in headers.get("accept", "")


async def test_opensearch_3_3_and_later_pages_with_the_shard_doc_tiebreaker(opensearch) -> None:
    server, source = await opensearch(make_docs(5), version="3.3.0")
    src = source(page_size=2)

    assert sum(map(len, await collect(src, LogQuery(intervals=(window(0, 9),))))) == 5
    assert sum(map(len, await collect(src, LogQuery(intervals=(window(0, 9),))))) == 5

    assert {json.dumps(r.body["sort"][1]) for r in server.of("search")} == {'{"_shard_doc": {"order": "asc"}}'}
    assert len(server.of("info")) == 1  # the version is asked once


async def test_a_configured_opensearch_tiebreaker_is_used_without_asking_the_version(opensearch) -> None:
    server, source = await opensearch(make_docs(5), version="3.3.0")
    await collect(source(tiebreaker="_doc"), LogQuery(intervals=(window(0, 9),)))

    assert server.of("search")[0].body["sort"][1] == {"_doc": {"order": "asc"}}
    assert server.of("info") == []


# --- memory ----------------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_exporting_a_million_documents_stays_under_300_mb(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    n = 1_000_000
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.contract.search_server", "--documents", str(n), "--start-ns", str(T0),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{(await server.stdout.readline()).split()[1].decode()}"
        exporter = ProcessExporter(
            functools.partial(ElasticsearchLogSource, url, page_size=5000),
            functools.partial(LocalObjectStore, tmp_path),
        )
        query = LogQuery(intervals=(Interval(start_ns=T0, end_ns=T0 + n * 10**6),))
        with caplog.at_level(logging.INFO, logger="training_controller.adapters.export.process"):
            result = await exporter.export(query, job_id="mem", bucket="training-logs", window_seconds=60)
    finally:
        assert server.stdin is not None
        server.stdin.close()  # the server serves until its stdin closes
        await asyncio.wait_for(server.wait(), 10)

    # VmHWM, each process's own peak: the worker's and its masking process's, as the worker reports them.
    (done,) = [r for r in caplog.records if hasattr(r, "worker_peak_rss_kib")]
    print(f"exported {result.count} documents; peak RSS worker {done.worker_peak_rss_kib / 1024:.0f} MB, "
          f"masking {done.masking_peak_rss_kib / 1024:.0f} MB")
    assert result.count == n
    assert done.worker_peak_rss_kib < 300 * 1024
    assert done.masking_peak_rss_kib < 300 * 1024
