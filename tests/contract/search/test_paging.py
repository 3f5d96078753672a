"""Contract tests of both search log sources against a local server that speaks each wire format
(`search_server.py`), once per backend (the `backend` fixture): counting, paging with a point in time and
search_after, the documents as the core gets them, and the point in time closed on every way out."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from tests.contract.search.backends import collect, logs
from tests.contract.search_corpus import T0, Mapping, S, make_docs, window
from training_controller.adapters.logs.search_query import iso_to_ns, ns_to_iso
from training_controller.core.errors import SourceRejected, SourceUnavailable
from training_controller.core.queries import Interval, LogQuery

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
