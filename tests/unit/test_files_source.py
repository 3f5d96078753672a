"""The files log source: which documents a query selects, in what order, and what it skips."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from training_controller.adapters.logs import files as files_module
from training_controller.adapters.logs.files import FilesLogSource
from training_controller.core.errors import SourceUnavailable
from training_controller.core.queries import Interval, LogQuery, Workload


def _doc(ts: int, log: str = "hello", *, deployment: str = "web", namespace: str = "shop", cluster: str = "c1") -> dict:
    return {"timestamp": ts, "log": log, "deployment": deployment, "namespace_name": namespace, "cluster_id": cluster}


def _write(path: Path, docs: list[dict | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def _query(*intervals: tuple[int, int], **fields) -> LogQuery:
    return LogQuery(intervals=tuple(Interval(start_ns=s, end_ns=e) for s, e in intervals), **fields)


async def _all(source: FilesLogSource, query: LogQuery) -> list[dict]:
    return [doc async for batch in source.stream(query) for doc in batch]


async def test_only_documents_inside_the_intervals_are_selected(tmp_path: Path):
    _write(tmp_path / "a.jsonl", [_doc(ts, f"line {ts}") for ts in (5, 10, 15, 19, 20, 25, 30, 40)])
    source = FilesLogSource(tmp_path)
    query = _query((10, 20), (30, 31))  # end excluded

    docs = await _all(source, query)

    assert [d["timestamp"] for d in docs] == [10, 15, 19, 30]
    assert await source.count(query) == 4


async def test_each_interval_is_sorted_by_timestamp_across_files_in_query_order(tmp_path: Path):
    _write(tmp_path / "b.jsonl", [_doc(7), _doc(102), _doc(3)])
    _write(tmp_path / "sub" / "a.jsonl", [_doc(5), _doc(101), _doc(1), _doc(100)])
    source = FilesLogSource(tmp_path)

    docs = await _all(source, _query((100, 200), (0, 10)))

    assert [d["timestamp"] for d in docs] == [100, 101, 102, 1, 3, 5, 7]


async def test_equal_timestamps_keep_line_order_within_a_file(tmp_path: Path):
    _write(tmp_path / "a.jsonl", [_doc(5, "first"), _doc(5, "second"), _doc(4, "zero")])

    docs = await _all(FilesLogSource(tmp_path), _query((0, 10)))

    assert [d["log"] for d in docs] == ["zero", "first", "second"]


async def test_workload_filters_are_honoured(tmp_path: Path):
    _write(
        tmp_path / "a.jsonl",
        [
            _doc(1, "a", deployment="web", namespace="shop"),
            _doc(2, "b", deployment="db", namespace="shop"),
            _doc(3, "c", deployment="web", namespace="other"),
            _doc(4, "d", deployment="api", namespace="shop", cluster="c2"),
        ],
    )
    source = FilesLogSource(tmp_path)
    query = _query(
        (0, 10),
        workloads=(Workload(namespace_name="shop", deployment="web"), Workload(cluster_id="c2")),
    )

    assert [d["log"] for d in await _all(source, query)] == ["a", "d"]
    assert await source.count(query) == 2


async def test_keyword_exclusion_drops_matching_messages_case_insensitively(tmp_path: Path):
    _write(tmp_path / "a.jsonl", [_doc(1, "all good"), _doc(2, "Connection Refused by peer"), _doc(3, "FATAL: x")])
    source = FilesLogSource(tmp_path)

    docs = await _all(source, _query((0, 10), exclude_keywords=("connection refused", "fatal")))

    assert [d["log"] for d in docs] == ["all good"]


async def test_upper_case_exclusion_keyword_still_excludes(tmp_path: Path):
    _write(tmp_path / "a.jsonl", [_doc(1, "all good"), _doc(2, "ERROR: disk")])

    docs = await _all(FilesLogSource(tmp_path), _query((0, 10), exclude_keywords=("ERROR",)))

    assert [d["log"] for d in docs] == ["all good"]


async def test_anomaly_exclusion_drops_labelled_documents(tmp_path: Path):
    _write(tmp_path / "a.jsonl", [{**_doc(1, "a"), "anomaly_level": "Anomaly"}, {**_doc(2, "b"), "anomaly_level": "Normal"}])

    docs = await _all(FilesLogSource(tmp_path), _query((0, 10), exclude_anomalies=True))

    assert [d["log"] for d in docs] == ["b"]


async def test_stream_stops_at_max_documents_but_count_does_not(tmp_path: Path):
    _write(tmp_path / "a.jsonl", [_doc(ts) for ts in range(10)])
    _write(tmp_path / "b.jsonl", [_doc(ts) for ts in range(100, 110)])
    source = FilesLogSource(tmp_path)
    query = _query((0, 10), (100, 110), max_documents=12)

    docs = await _all(source, query)

    assert [d["timestamp"] for d in docs] == [*range(10), 100, 101]
    assert await source.count(query) == 20


async def test_stream_yields_batches_of_at_most_batch_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(files_module, "BATCH", 3)
    _write(tmp_path / "a.jsonl", [_doc(ts) for ts in range(7)])

    batches = [batch async for batch in FilesLogSource(tmp_path).stream(_query((0, 10)))]

    assert [len(b) for b in batches] == [3, 3, 1]


async def test_lines_that_are_not_documents_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    _write(
        tmp_path / "a.jsonl",
        [
            _doc(1, "one"),
            "{not json",
            json.dumps({"log": "no timestamp"}),
            json.dumps({"timestamp": 2}),  # no log
            json.dumps({"timestamp": "soon", "log": "bad timestamp"}),
            "[1, 2, 3]",
            "null",
            "",
            json.dumps({"timestamp": "3", "log": 42}),  # coerced: string timestamp, non-string log
            _doc(4, "four"),
        ],
    )
    source = FilesLogSource(tmp_path)

    docs = await _all(source, _query((0, 10)))

    assert [(int(d["timestamp"]), d["log"]) for d in docs] == [(1, "one"), (3, "42"), (4, "four")]
    assert await source.count(_query((0, 10))) == 3
    assert "skipped 7 lines" in caplog.text


async def test_gzipped_jsonl_is_read_and_other_files_are_ignored(tmp_path: Path):
    _write(tmp_path / "a.jsonl.gz", [_doc(2, "from gz"), _doc(1, "also gz")])
    _write(tmp_path / "b.jsonl", [_doc(3, "plain")])
    (tmp_path / "notes.txt").write_text(json.dumps(_doc(4, "ignored")) + "\n")
    _write(tmp_path / "c.json", [_doc(5, "ignored too")])

    docs = await _all(FilesLogSource(tmp_path), _query((0, 10)))

    assert [d["log"] for d in docs] == ["also gz", "from gz", "plain"]


async def test_no_match_streams_nothing(tmp_path: Path):
    _write(tmp_path / "a.jsonl", [_doc(1)])
    source = FilesLogSource(tmp_path)

    assert await _all(source, _query((50, 60))) == []
    assert await source.count(_query((50, 60))) == 0


async def test_missing_directory_raises_source_unavailable(tmp_path: Path):
    source = FilesLogSource(tmp_path / "nowhere")

    with pytest.raises(SourceUnavailable, match="does not exist"):
        await source.count(_query((0, 10)))
    with pytest.raises(SourceUnavailable):
        await _all(source, _query((0, 10)))
    assert await source.ping() is False
    assert await FilesLogSource(tmp_path).ping() is True


async def test_sample_logs_are_all_selected_by_their_hour(sample_logs: Path):
    from tests.conftest import MINUTE_NS, SAMPLE_END_NS

    source = FilesLogSource(sample_logs)
    minute = _query((SAMPLE_END_NS - MINUTE_NS, SAMPLE_END_NS))

    docs = await _all(source, minute)

    assert docs and len(docs) == await source.count(minute)
    stamps = [int(d["timestamp"]) for d in docs]
    assert stamps == sorted(stamps)
    assert all(SAMPLE_END_NS - MINUTE_NS <= ts < SAMPLE_END_NS for ts in stamps)


# --- more hits than fit in memory ------------------------------------------------------------------------


def _entries(directory: Path) -> list[Path]:
    return list(directory.iterdir())


@pytest.fixture
def small_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Runs of 3 hits and batches of 2, with the run files in a folder of their own."""
    monkeypatch.setattr(files_module, "RUN", 3)
    monkeypatch.setattr(files_module, "BATCH", 2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(files_module.tempfile, "tempdir", str(scratch))
    return scratch


async def test_hits_beyond_memory_come_sorted_across_files_with_ties_in_line_then_file_order(
    tmp_path: Path, small_memory: Path
):
    _write(tmp_path / "logs" / "a.jsonl", [_doc(ts, f"a{n}") for n, ts in enumerate([9, 3, 7, 3, 1, 8, 2])])
    _write(tmp_path / "logs" / "b.jsonl", [_doc(ts, f"b{n}") for n, ts in enumerate([3, 0, 9, 5])])

    docs = await _all(FilesLogSource(tmp_path / "logs"), _query((0, 100)))

    assert [d["log"] for d in docs] == ["b1", "a4", "a6", "b0", "a1", "a3", "b3", "a2", "a5", "a0", "b2"]
    assert _entries(small_memory) == []  # the run files are gone


async def test_time_ordered_files_beyond_memory_come_in_order(tmp_path: Path, small_memory: Path):
    _write(tmp_path / "logs" / "1.jsonl", [_doc(ts) for ts in range(0, 10)])
    _write(tmp_path / "logs" / "2.jsonl.gz", [_doc(ts) for ts in range(10, 17)])
    source = FilesLogSource(tmp_path / "logs")

    docs = await _all(source, _query((2, 15), (0, 2), max_documents=14))

    assert [d["timestamp"] for d in docs] == [*range(2, 15), 0]
    assert _entries(small_memory) == []


async def test_a_stream_closed_early_leaves_no_run_files(tmp_path: Path, small_memory: Path):
    _write(tmp_path / "logs" / "a.jsonl", [_doc(ts) for ts in range(20, 0, -1)])
    stream = FilesLogSource(tmp_path / "logs").stream(_query((0, 100)))

    first = await anext(stream)
    assert _entries(small_memory)  # runs on disk while the stream is open
    await stream.aclose()

    assert [d["timestamp"] for d in first] == [1, 2]
    assert _entries(small_memory) == []
