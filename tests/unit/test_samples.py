"""Sample logs: shape of the documents, the workload mix, determinism, and the JSONL files on disk."""

from __future__ import annotations

import gzip
import itertools
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from training_controller.demo.samples import generate_documents, iter_documents, write_sample_logs

NS = 1_000_000_000
START = 1_617_038_162 * NS  # 2021-03-29 17:16:02 UTC
HOUR = 3600 * NS
FIELDS = {"timestamp", "log", "cluster_id", "namespace_name", "deployment", "pod_name", "is_control_plane_log"}
WORKLOADS = {
    ("web", "nginx-ingress", False): 0.45,
    ("data", "postgres", False): 0.20,
    ("kube-system", "kube-apiserver", True): 0.20,
    ("shop", "payment-service", False): 0.15,
}


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return list(generate_documents(start_ns=START, end_ns=START + HOUR, seed=0))


def _by_deployment(docs: list[dict], deployment: str) -> list[str]:
    return [d["log"] for d in docs if d["deployment"] == deployment]


def _mask(line: str) -> str:
    """Replace the variable parts (UUIDs, hex ids, numbers) so that lines of one template collapse."""
    line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<UUID>", line)
    return re.sub(r"[0-9A-Fa-f]*\d[0-9A-Fa-f]*", "#", line)


def test_documents_have_exactly_the_opni_fields_with_their_types(docs: list[dict]) -> None:
    for doc in docs:
        assert set(doc) == FIELDS
        assert type(doc["timestamp"]) is int
        assert type(doc["is_control_plane_log"]) is bool
        for key in FIELDS - {"timestamp", "is_control_plane_log"}:
            assert isinstance(doc[key], str) and doc[key]
        assert "\n" not in doc["log"]
    assert {d["cluster_id"] for d in docs} == {"demo-cluster"}


def test_timestamps_lie_in_the_window_and_never_decrease(docs: list[dict]) -> None:
    stamps = [d["timestamp"] for d in docs]
    assert all(START <= t < START + HOUR for t in stamps)
    assert stamps == sorted(stamps)
    # The documents spread over the whole window, not just its beginning.
    assert stamps[0] - START < 60 * NS and START + HOUR - stamps[-1] < 60 * NS


def test_document_count_follows_the_requested_rate(docs: list[dict]) -> None:
    assert 0.9 * 2.0 * 3600 < len(docs) < 1.1 * 2.0 * 3600
    slow = list(generate_documents(start_ns=START, end_ns=START + HOUR, rate_per_s=0.2, seed=0))
    assert 0.85 * 0.2 * 3600 < len(slow) < 1.15 * 0.2 * 3600


def test_all_four_workloads_appear_in_roughly_the_configured_mix(docs: list[dict]) -> None:
    counts = Counter((d["namespace_name"], d["deployment"], d["is_control_plane_log"]) for d in docs)
    assert set(counts) == set(WORKLOADS)
    for key, share in WORKLOADS.items():
        assert abs(counts[key] / len(docs) - share) < 0.04, key
    for (_, deployment, _), _ in WORKLOADS.items():
        pods = {d["pod_name"] for d in docs if d["deployment"] == deployment}
        assert 2 <= len(pods) <= 3, deployment
        assert all(p.startswith(f"{deployment}-") for p in pods)
    nginx_pods = {d["pod_name"] for d in docs if d["deployment"] == "nginx-ingress"}
    assert all(re.fullmatch(r"nginx-ingress-[a-z0-9]{9,10}-[a-z0-9]{5}", p) for p in nginx_pods)


@pytest.mark.parametrize(
    ("deployment", "markers"),
    [
        ("nginx-ingress", ['" 200 ', '" 404 ', "HTTP/1.1", "[warn]", "[error]", "upstream:"]),
        ("postgres", ["checkpoint complete: wrote", "duration:", "statement: SELECT",
                      "connection authorized: user=", "automatic vacuum of table", "ERROR:  "]),
        ("kube-apiserver", ['httplog.go:89] "HTTP" verb=', "reflector.go:436] watch of",
                            "controller.go:606] quota admission added evaluator for:", "\nW", "\nE"]),
        ("payment-service", ["  INFO 1 --- [", "  WARN 1 --- [", " ERROR 1 --- [", "Processed payment",
                             "Exception: ", "\tat com.example.payment."]),
    ],
)
def test_each_workload_writes_several_kinds_of_lines(docs: list[dict], deployment: str, markers: list[str]) -> None:
    text = "\n" + "\n".join(_by_deployment(docs, deployment))
    for marker in markers:
        assert marker in text, marker


def test_lines_vary_in_their_parameters_but_come_from_few_templates(docs: list[dict]) -> None:
    for deployment in ("nginx-ingress", "postgres", "kube-apiserver", "payment-service"):
        lines = _by_deployment(docs, deployment)
        distinct = set(lines)
        assert len(distinct) > 0.9 * len(lines), deployment
        assert len({_mask(line) for line in lines}) < 0.75 * len(distinct), deployment
    assert len({_mask(d["log"]) for d in docs}) < 0.3 * len({d["log"] for d in docs})
    # The parameters really vary: many clients, paths and status codes in the access log.
    access = [m for line in _by_deployment(docs, "nginx-ingress")
              if (m := re.match(r'(\S+) - - \[.*?\] "(\w+) (\S+) HTTP/1.1" (\d{3}) ', line))]
    assert len({m[1] for m in access}) > 500
    assert len({m[3] for m in access}) > 500
    assert len({m[4] for m in access}) >= 6
    assert len({m[2] for m in access}) >= 4


def test_stack_traces_arrive_as_consecutive_one_line_documents(docs: list[dict]) -> None:
    heads = [i for i, d in enumerate(docs) if re.match(r"[\w.$]+(Exception|Error): ", d["log"])]
    app_docs = sum(d["deployment"] == "payment-service" for d in docs)
    assert 1 <= len(heads) <= app_docs / 60  # roughly 1 in 200 application documents starts a trace
    for i in heads:
        header, exception = docs[i - 1], docs[i]
        assert " ERROR 1 --- [" in header["log"]
        frames = list(itertools.takewhile(lambda d: d["log"].startswith(("\tat ", "\t...", "Caused by: ")),
                                          docs[i + 1:]))
        assert len(frames) >= 5
        group = [header, exception, *frames]
        assert {d["pod_name"] for d in group} == {header["pod_name"]}
        assert group[-1]["timestamp"] - header["timestamp"] < 1_000_000  # within a millisecond
        assert all(d["timestamp"] < e["timestamp"] for d, e in itertools.pairwise(group))


def _second(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns // NS, tz=UTC)


@pytest.mark.parametrize(
    ("deployment", "pattern", "fmt"),
    [
        ("nginx-ingress", r"^\S+ - - \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\]", "%d/%b/%Y:%H:%M:%S %z"),
        ("nginx-ingress", r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[", "%Y/%m/%d %H:%M:%S"),
        ("postgres", r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.\d{3} UTC ", "%Y-%m-%d %H:%M:%S"),
        ("kube-apiserver", r"^[IWE](\d{4} \d\d:\d\d:\d\d)\.\d{6} ", "%m%d %H:%M:%S"),
        ("payment-service", r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.\d{3} ", "%Y-%m-%d %H:%M:%S"),
    ],
)
def test_embedded_timestamps_match_the_document_timestamp_to_the_second(
    docs: list[dict], deployment: str, pattern: str, fmt: str
) -> None:
    checked = 0
    for doc in docs:
        if doc["deployment"] != deployment or not (m := re.match(pattern, doc["log"])):
            continue
        embedded = datetime.strptime(m[1], fmt).replace(tzinfo=UTC)
        expected = _second(doc["timestamp"])
        if "%Y" not in fmt:  # klog carries no year
            expected = expected.replace(year=1900)
        assert embedded == expected, doc["log"]
        checked += 1
    assert checked >= 50


def test_same_seed_gives_identical_documents_and_another_seed_does_not() -> None:
    def run(seed: int) -> list[dict]:
        return list(generate_documents(start_ns=START, end_ns=START + 600 * NS, seed=seed, cluster_id="c1"))

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first != other
    assert [d["log"] for d in first[:20]] != [d["log"] for d in other[:20]]
    assert {d["cluster_id"] for d in first} == {"c1"}


def test_write_sample_logs_writes_one_time_ordered_file_per_slice(tmp_path: Path) -> None:
    end = datetime(2021, 3, 29, 18, 0, tzinfo=UTC)
    end_ns = int(end.timestamp()) * NS
    paths = write_sample_logs(tmp_path / "out", hours=1.0, end_ns=end_ns, file_hours=0.4, rate_per_s=1.0)
    assert [p.name for p in paths] == [
        "logs-20210329T1700.jsonl",
        "logs-20210329T1724.jsonl",
        "logs-20210329T1748.jsonl",
    ]
    assert all(p.parent == tmp_path / "out" for p in paths)
    bounds = [end_ns - HOUR, end_ns - HOUR + 24 * 60 * NS, end_ns - HOUR + 48 * 60 * NS, end_ns]
    for path, lo, hi in zip(paths, bounds[:-1], bounds[1:], strict=True):
        stamps = [d["timestamp"] for d in iter_documents([path])]
        assert stamps, path
        assert all(lo <= t < hi for t in stamps)
        # Each file covers its slice: documents near both of its ends.
        assert stamps[0] - lo < 60 * NS and hi - stamps[-1] < 60 * NS


def test_reading_the_files_back_gives_the_generated_documents(tmp_path: Path) -> None:
    end_ns = START // (60 * NS) * 60 * NS
    paths = write_sample_logs(tmp_path, hours=0.5, end_ns=end_ns, seed=3, cluster_id="c2", file_hours=0.25)
    expected = list(generate_documents(start_ns=end_ns - HOUR // 2, end_ns=end_ns, seed=3, cluster_id="c2"))
    assert len(paths) == 2
    assert list(iter_documents(paths)) == expected


def test_iter_documents_reads_gzipped_files_and_skips_blank_lines(tmp_path: Path) -> None:
    plain = write_sample_logs(tmp_path, hours=0.1, end_ns=START, rate_per_s=1.0)
    gz = tmp_path / "copy.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(plain[0].read_text(encoding="utf-8") + "\n\n")
    assert list(iter_documents([gz])) == list(iter_documents(plain))


def test_end_defaults_to_now_floored_to_the_minute(tmp_path: Path) -> None:
    before = time.time_ns() // (60 * NS) * 60 * NS
    paths = write_sample_logs(tmp_path, hours=1 / 60, rate_per_s=0.5)
    after = time.time_ns() // (60 * NS) * 60 * NS
    names = {f"logs-{_second(t - 60 * NS):%Y%m%dT%H%M}.jsonl" for t in (before, after)}
    assert len(paths) == 1 and paths[0].name in names
    stamps = [d["timestamp"] for d in iter_documents(paths)]
    assert all(before - 60 * NS <= t < after for t in stamps)


def test_invalid_options_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        list(generate_documents(start_ns=START, end_ns=START + NS, rate_per_s=0))
    with pytest.raises(ValueError):
        write_sample_logs(tmp_path, hours=0, end_ns=START)
    with pytest.raises(ValueError):
        write_sample_logs(tmp_path, hours=1, end_ns=START, file_hours=0.001)
    assert list(generate_documents(start_ns=START, end_ns=START)) == []
