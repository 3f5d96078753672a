"""Contract tests of both search log sources against a local server that speaks each wire format
(`search_server.py`), once per backend (the `backend` fixture): a LogQuery in the query DSL, and the cap
on documents."""

from __future__ import annotations

import json

import pytest

from tests.contract.search.backends import collect, logs
from tests.contract.search_corpus import make_docs, window
from training_controller.adapters.logs.search_query import allocate_cap
from training_controller.core.errors import SourceRejected
from training_controller.core.queries import LogQuery, Workload

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


# --- a search body given by the request (Opni's training query) ----------------------------------------


async def test_a_search_body_from_the_request_runs_as_it_is_within_the_cap(cluster) -> None:
    docs = make_docs(30)
    for i, doc in enumerate(docs):
        doc["deployment"] = "web" if i % 2 else "db"
    server, source = await cluster(docs)
    opni_query = {
        "bool": {
            "filter": [{"range": {"timestamp": {"gte": window(0, 20).start_ns, "lt": window(0, 20).end_ns}}}],
            "minimum_should_match": 1,
            "should": [{"term": {"deployment": {"value": "web"}}}],
            "must_not": [{"match_phrase": {"log": "never there"}}],
        }
    }
    query = LogQuery(intervals=(window(0, 20),), search={"query": opni_query}, max_documents=7)

    batches = await collect(source(), query)

    assert len(logs(batches)) == 7
    assert {d["deployment"] for b in batches for d in b} == {"web"}
    searches = server.of("search")
    assert searches and all(s.body["query"] == opni_query for s in searches)  # sent as given, not rebuilt
    assert server.of("count")[0].body["query"] == opni_query
