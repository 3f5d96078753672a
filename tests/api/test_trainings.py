"""Trainings through the REST API: start, read, list a page at a time, cancel, and follow as Server-Sent Events."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.api.conftest import TOKENS, Client, client_of, training
from tests.conftest import StartService, wait_until
from training_controller.api.events import EVENTS_STREAM

pytestmark = pytest.mark.slow


@pytest.fixture
async def api(start_service: StartService, sample_logs: Path, session: aiohttp.ClientSession) -> Client:
    service = await start_service(logs=sample_logs, api_tokens=TOKENS, inference_worker="external")
    return client_of(service, session)


async def state_of(api: Client, run: str) -> str:
    return (await api.get(f"/api/v1/trainings/{run}")).json["state"]


async def test_a_training_is_started_followed_and_read_back(api: Client) -> None:
    created = await api.post("/api/v1/trainings", training())
    assert created.status == 201
    body = created.json
    assert body["status"] == "queued" and body["queue_position"] == 0
    run = body["runId"]
    assert created.headers["Location"] == f"/api/v1/trainings/{run}"

    events = await api.events(run)
    names = [e["event"] for e in events]
    phases = [e["data"]["phase"] for e in events if e["event"] == "phase"]
    assert phases == ["queued", "exporting", "launching", "running", "succeeded"]
    assert names[-1] == "end" and events[-1]["data"] == {"job_id": run, "phase": "succeeded"}
    progress = [e["data"]["event"] for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["percent"] == 100.0 and all("loss" in p for p in progress)
    ids = [e["id"] for e in events if e["id"] is not None]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    # queued was never published on training_logs: it comes from the record, without an id
    assert events[0]["id"] is None and events[0]["data"]["replay"] is True

    read = (await api.get(f"/api/v1/trainings/{run}")).json
    assert read["state"] == "completed" and read["runId"] == run and read["queue_position"] is None
    record = read["record"]
    assert record["phase"] == "succeeded" and record["requested_by"] == "api:ops"
    assert [h["phase"] for h in record["history"]][-1] == "succeeded"
    assert record["train_data_version_hash"] and record["artifacts"]["model"] and record["parameters"]["epochs"] == 1
    assert record["progress"]["percent"] == 100.0

    # Resumed after any event: exactly the events after it, no gap, no repeat.
    middle = ids[len(ids) // 2]
    resumed = await api.events(run, last_id=middle)
    assert [e["id"] for e in resumed if e["id"] is not None] == [i for i in ids if i > middle]
    assert [e for e in resumed if e["id"] is not None] == [e for e in events if e["id"] is not None and e["id"] > middle]
    assert resumed[-1]["event"] == "end"
    assert (await api.events(run, last_id=ids[-1]))[-1]["event"] == "end"


async def test_trainings_are_listed_by_state_a_page_at_a_time_and_a_queued_one_is_cancelled(api: Client) -> None:
    first = (await api.post("/api/v1/trainings", training(30))).json["runId"]
    second = (await api.post("/api/v1/trainings", training(20))).json
    third = (await api.post("/api/v1/trainings", training(10))).json
    assert second["queue_position"] >= 1 and third["queue_position"] >= second["queue_position"]

    pending = (await api.get("/api/v1/trainings?state=pending")).json["items"]
    assert third["runId"] in [t["runId"] for t in pending]
    cancelled = await api.delete(f"/api/v1/trainings/{third['runId']}")
    assert cancelled.status == 200
    assert cancelled.json["state"] == "cancelled" and cancelled.json["record"]["cancel_requested"] is True
    assert (await api.get("/api/v1/trainings?state=cancelled")).json["items"][0]["runId"] == third["runId"]

    page1 = (await api.get("/api/v1/trainings?limit=2")).json
    assert [t["runId"] for t in page1["items"]] == [third["runId"], second["runId"]]
    page2 = (await api.get(f"/api/v1/trainings?limit=2&cursor={page1['next_cursor']}")).json
    assert [t["runId"] for t in page2["items"]] == [first] and page2["next_cursor"] is None

    assert (await api.delete(f"/api/v1/trainings/{second['runId']}")).status == 200
    await wait_until(lambda: _ended(api, first), timeout=240, what="the first training to end")
    assert await state_of(api, first) == "completed"
    assert [t["runId"] for t in (await api.get("/api/v1/trainings?state=completed")).json["items"]] == [first]
    assert (await api.get("/api/v1/trainings?phase=cancelled&limit=1")).json["items"][0]["runId"] == third["runId"]


async def _ended(api: Client, run: str) -> bool:
    return await state_of(api, run) in ("completed", "failed", "cancelled")


async def test_a_running_training_is_cancelled_through_the_api_and_its_events_say_so(api: Client) -> None:
    run = (await api.post("/api/v1/trainings", training(30, 10))).json["runId"]
    await wait_until(lambda: _running(api, run), timeout=60, what="the training to run")
    reply = await api.delete(f"/api/v1/trainings/{run}")
    assert reply.status == 200 and reply.json["record"]["cancel_requested"] is True
    events = await api.events(run)
    assert events[-1] == {"id": None, "event": "end", "data": {"job_id": run, "phase": "cancelled"}}
    assert await state_of(api, run) == "cancelled"


async def _running(api: Client, run: str) -> bool:
    record = (await api.get(f"/api/v1/trainings/{run}")).json["record"]
    return record["phase"] == "running" and record["progress"] is not None


async def test_events_the_stream_no_longer_holds_come_from_the_record(api: Client, nc) -> None:
    far_from_the_logs = {"modelType": "nulog", "time_intervals": [{"start_ts": 10**9, "end_ts": 2 * 10**9}]}
    run = (await api.post("/api/v1/trainings", far_from_the_logs)).json["runId"]
    await wait_until(lambda: _ended(api, run), timeout=60, what="the training to fail")
    await nc.jetstream().delete_stream(EVENTS_STREAM)  # as if the job ran before the stream existed

    events = await api.events(run)
    assert [e["data"]["phase"] for e in events if e["event"] == "phase"] == ["queued", "exporting", "failed"]
    assert all(e["id"] is None and e["data"]["replay"] for e in events[:-1])
    assert events[-1]["event"] == "end" and events[-1]["data"]["phase"] == "failed"
    await nc.jetstream().stream_info(EVENTS_STREAM)  # and the stream is back for the next jobs
