"""Every `train` payload Opni's components publish becomes a training, or is refused with a logged reason."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import nats
import pytest

from tests.conftest import StartService, wait_until

pytestmark = pytest.mark.slow

ANOMALY_KEYWORDS = ["error", "fail", "fatal", "exception", "timeout", "unavailable", "crash",
                    "connection refused", "network error", "deadlock", "out of disk", "high load"]
NOW_MS = int(time.time() * 1000)
START_MS = NOW_MS - 3600 * 1000


def write_docs(log_dir: Path) -> dict[str, int]:
    """An hour of documents of three deployments, some labelled anomalous or holding an anomaly keyword."""
    counts = {"kept": 0, "in_range": 0}
    with (log_dir / "logs.jsonl").open("w") as f:
        for i in range(600):
            ts_ms = START_MS - 600_000 + i * 7_000  # from 10 minutes before the range to past its end
            deployment = ("nginx", "api", "db")[i % 3]
            anomalous = i % 10 == 0
            text = "request failed with timeout" if i % 7 == 0 else f"GET /orders/{i} 200 in {i % 9} ms"
            f.write(json.dumps({
                "timestamp": ts_ms * 1_000_000, "log": text, "cluster_id": "c1", "namespace_name": "web",
                "deployment": deployment, "anomaly_level": "Anomaly" if anomalous else "Normal",
            }) + "\n")
            in_range = START_MS <= ts_ms <= NOW_MS
            counts["in_range"] += in_range
            counts["kept"] += in_range and deployment in ("nginx", "api") and not anomalous and i % 7 != 0
    return counts


def opni_training_query(deployments: list[tuple[str, str, str]], *, max_size: int, count: int) -> dict:
    """The `train` payload of Opni's last training controller, exactly as `train_model()` builds it.

    rancher/opni-training-controller (newest main.py, index id 6890139374) #L43-L63 and #L155-L218:
    a range on `time` in milliseconds (gte/lte), one query_string per watched deployment under `should`
    with minimum_should_match 1, and under `must_not` the anomaly label and the anomaly keywords.
    """
    body = {"query": {"bool": {
        "filter": [{"range": {"time": {"gte": START_MS, "lte": NOW_MS}}}],
        "minimum_should_match": 1,
        "should": [
            {"query_string": {"fields": ["cluster_id", "namespace_name.keyword", "deployment.keyword"],
                              "query": f"{c} AND {n} AND {d}"}}
            for c, n, d in deployments
        ],
        "must_not": [
            {"match": {"anomaly_level.keyword": "Anomaly"}},
            {"query_string": {"query": " or ".join(f"({x})" for x in ANOMALY_KEYWORDS), "default_field": "log"}},
        ],
    }}}
    return {"max_size": max_size, "query": body, "count": count}


async def job_of(nc: nats.NATS, payload: dict, *, published: bool = False) -> dict:
    """The job a payload became, once it has ended; published plainly (as the Opni components do) or asked."""
    data = json.dumps(payload).encode()
    if published:
        before = {j["job_id"] for j in json.loads((await nc.request("training_jobs", b"{}", timeout=5)).data)["jobs"]}
        await nc.publish("train", data)

        async def queued() -> bool:
            jobs = json.loads((await nc.request("training_jobs", b"{}", timeout=5)).data)["jobs"]
            return any(j["job_id"] not in before for j in jobs)

        await wait_until(queued, timeout=30, what="the published request to become a job")
        jobs = json.loads((await nc.request("training_jobs", b"{}", timeout=5)).data)["jobs"]
        job_id = next(j["job_id"] for j in jobs if j["job_id"] not in before)
    else:
        reply = json.loads((await nc.request("train", data, timeout=10)).data)
        assert "job_id" in reply, reply
        job_id = reply["job_id"]

    async def ended() -> bool:
        record = json.loads((await nc.request("training_status", json.dumps({"job_id": job_id}).encode(), timeout=5)).data)
        return record["phase"] in ("succeeded", "failed")

    await wait_until(ended, timeout=240, what=f"job {job_id}")
    return json.loads((await nc.request("training_status", json.dumps({"job_id": job_id}).encode(), timeout=5)).data)


async def test_opni_controllers_training_query_trains_on_exactly_what_it_selects(
    nc: nats.NATS, start_service: StartService, log_dir: Path
) -> None:
    counts = write_docs(log_dir)
    await start_service()
    payload = opni_training_query([("c1", "web", "nginx"), ("c1", "web", "api")], max_size=10_000, count=counts["kept"])

    record = await job_of(nc, payload, published=True)

    assert record["phase"] == "succeeded", record["message"]
    assert record["log_count"] == counts["kept"]  # in range, watched, not anomalous, no anomaly keyword
    assert record["query"]["search"] == payload["query"]  # a search backend runs it as it is
    assert record["requested_by"].startswith("nats:train (stream, OpniQueryTrainRequest")


async def test_its_max_size_caps_the_training_data(nc: nats.NATS, start_service: StartService, log_dir: Path) -> None:
    write_docs(log_dir)
    await start_service()

    record = await job_of(nc, opni_training_query([("c1", "web", "nginx")], max_size=25, count=9999))

    assert record["phase"] == "succeeded", record["message"]
    assert record["log_count"] == 25


async def test_a_training_query_the_files_source_cannot_apply_fails_the_job_saying_which_part(
    nc: nats.NATS, start_service: StartService, log_dir: Path
) -> None:
    write_docs(log_dir)
    await start_service()
    payload = opni_training_query([("c1", "web", "nginx")], max_size=100, count=1)
    payload["query"]["query"]["bool"]["must"] = [{"wildcard": {"log": "GET*"}}]

    record = await job_of(nc, payload)

    assert record["phase"] == "failed"
    assert "the files log source cannot apply this part of the search query: must wildcard" in record["message"]


async def test_the_drain_services_millisecond_interval_trains_on_that_interval(
    nc: nats.NATS, start_service: StartService, log_dir: Path
) -> None:
    """rancher/opni-drain-service (drain_training_inferencing.py, index id 24260176137, training_signal_check):
    `{"start_ts": <ms>, "end_ts": <ms>}` published on `train` when the template count has been stable."""
    counts = write_docs(log_dir)
    await start_service()

    record = await job_of(nc, {"start_ts": START_MS, "end_ts": NOW_MS + 1}, published=True)

    assert record["phase"] == "succeeded", record["message"]
    assert record["log_count"] == counts["in_range"]
    assert record["query"]["intervals"] == [{"start_ns": START_MS * 1_000_000, "end_ns": (NOW_MS + 1) * 1_000_000}]


async def test_a_payload_no_opni_component_sends_is_dropped_from_the_stream_with_its_reason_logged(
    nc: nats.NATS, start_service: StartService, caplog: pytest.LogCaptureFixture
) -> None:
    await start_service()
    caplog.set_level(logging.WARNING)

    await nc.publish("train", b'{"retrain": true}')

    async def logged() -> bool:
        return "rejected train request #1 of the stream" in caplog.text

    await wait_until(logged, timeout=10, what="the rejection in the log")
    assert "Opni's {max_size, query, count}" in caplog.text and '{"retrain": true}' in caplog.text
    assert json.loads((await nc.request("training_jobs", b"{}", timeout=5)).data)["jobs"] == []
