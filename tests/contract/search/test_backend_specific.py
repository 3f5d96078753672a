"""Contract tests of what only one of the search backends does on the wire, and of the memory an export of a
million documents takes through one."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from pathlib import Path

import pytest

from tests.contract.search.backends import collect
from tests.contract.search_corpus import T0, make_docs, window
from training_controller.adapters.export.process import ProcessExporter
from training_controller.adapters.logs.elasticsearch import ElasticsearchLogSource
from training_controller.adapters.storage.local import LocalObjectStore
from training_controller.core.errors import SourceRejected
from training_controller.core.queries import Interval, LogQuery

REPO = Path(__file__).resolve().parents[3]


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
