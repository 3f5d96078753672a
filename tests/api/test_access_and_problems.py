"""Who may use the API, and how it says no: bearer tokens of both roles, and every error as problem details."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.api.conftest import RO, RW, TOKENS, Client, client_of, training
from tests.conftest import StartService


@pytest.fixture
async def api(start_service: StartService, session: aiohttp.ClientSession) -> Client:
    # Empty logs: a training fails at once, which is all these tests need of one.
    service = await start_service(api_tokens=TOKENS, inference_worker="external", api_max_body_bytes=4096)
    return client_of(service, session)


ROUTES = [
    ("POST", "/api/v1/trainings"),
    ("GET", "/api/v1/trainings"),
    ("GET", "/api/v1/trainings/abc"),
    ("DELETE", "/api/v1/trainings/abc"),
    ("GET", "/api/v1/trainings/abc/events"),
    ("GET", "/api/v1/models"),
    ("POST", "/api/v1/models/abc/promote"),
    ("POST", "/api/v1/predict"),
    ("GET", "/api/v1/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_api_route_refuses_a_request_without_a_token_with_401(api: Client, method: str, path: str) -> None:
    reply = await api.as_(None).request(method, path)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="training-controller"'
    assert "bearer token" in reply.problem["detail"]


async def test_an_unknown_token_is_401_invalid_token(api: Client) -> None:
    reply = await api.as_("x" * 30).get("/api/v1/trainings")
    assert reply.status == 401
    assert 'error="invalid_token"' in reply.headers["WWW-Authenticate"]
    assert reply.problem["instance"] == "/api/v1/trainings"


async def test_probes_and_metrics_stay_open(api: Client) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await api.as_(None).get(path)).status == 200, path


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/api/v1/trainings", training()), ("DELETE", "/api/v1/trainings/abc", None),
     ("POST", "/api/v1/models/abc/promote", None)],
)
async def test_a_read_only_token_may_not_write(api: Client, method: str, path: str, body: object) -> None:
    reply = await api.as_(RO).request(method, path, json_body=body)
    assert reply.status == 403
    assert "viewer is read-only" in reply.problem["detail"]
    assert (await api.get("/api/v1/trainings")).json["items"] == []  # nothing was queued


async def test_a_read_only_token_reads_and_predicts(api: Client) -> None:
    reader = api.as_(RO)
    assert (await reader.get("/api/v1/trainings")).status == 200
    assert (await reader.get("/api/v1/models")).json == {"models": [], "current": None}
    assert (await reader.get("/api/v1/openapi.json")).json["openapi"] == "3.1.0"
    # Reading, not writing: refused only because no inference worker runs here (503, not 403).
    assert (await reader.post("/api/v1/predict", {"logs": ["a line"]})).status == 503


async def test_predict_without_an_inference_worker_is_503_saying_so(api: Client) -> None:
    reply = await api.post("/api/v1/predict", {"logs": ["GET /index.html 200"]})
    assert reply.status == 503
    assert "no inference worker answers on nulog_predict" in reply.problem["detail"]
    assert reply.headers["Retry-After"]


async def test_a_controller_without_tokens_keeps_the_api_closed(start_service: StartService, session) -> None:
    service = await start_service(inference_worker="external")
    reply = await client_of(service, session, RW).get("/api/v1/trainings")
    assert reply.status == 401
    assert "API_TOKENS" in reply.problem["detail"]


async def test_a_body_that_is_not_json_is_400(api: Client) -> None:
    reply = await api.request("POST", "/api/v1/trainings", data=b"{not json", headers={"Content-Type": "application/json"})
    assert reply.status == 400
    assert "not valid JSON" in reply.problem["detail"]
    assert (await api.request("POST", "/api/v1/trainings", data=b"[1, 2]")).problem["status"] == 400


async def test_a_bad_query_is_400_naming_the_parameter(api: Client) -> None:
    reply = await api.get("/api/v1/trainings?limit=0&state=sleeping")
    assert reply.status == 400
    problem = reply.problem
    assert any(e.startswith("limit:") for e in problem["errors"]) and any(e.startswith("state:") for e in problem["errors"])
    assert (await api.get("/api/v1/trainings?state=failed&phase=failed")).status == 400
    assert (await api.get("/api/v1/trainings?cursor=-1")).status == 400


async def test_a_bad_last_event_id_is_400(api: Client) -> None:
    created = (await api.post("/api/v1/trainings", training())).json
    reply = await api.get(f"/api/v1/trainings/{created['runId']}/events", headers={"Last-Event-ID": "soon"})
    assert reply.status == 400
    assert "Last-Event-ID" in reply.problem["detail"]


async def test_an_invalid_training_is_422_naming_each_problem(api: Client) -> None:
    reply = await api.post("/api/v1/trainings", {"modelType": "", "time_intervals": [{"start_ts": 9, "end_ts": 9}],
                                                 "colour": "red"})
    assert reply.status == 422
    errors = reply.problem["errors"]
    assert any(e.startswith("modelType:") for e in errors)
    assert any(e.startswith("time_intervals.0:") and "must be before" in e for e in errors)
    assert any(e.startswith("colour:") for e in errors)
    assert (await api.post("/api/v1/trainings", {"modelType": "nulog"})).problem["status"] == 422


async def test_a_model_type_or_parameters_the_catalogue_refuses_are_422_naming_them(api: Client) -> None:
    unknown = await api.post("/api/v1/trainings", training(modelType="gpt"))
    bad = await api.post("/api/v1/trainings", training(parameters={"epochs": 0, "colour": "red"}))

    assert unknown.status == 422 and "unknown model 'gpt'; this controller trains: nulog" in unknown.problem["detail"]
    assert bad.status == 422
    assert "epochs must be at least 1, not 0" in bad.problem["detail"]
    assert "unknown parameter 'colour' for model nulog" in bad.problem["detail"]
    assert (await api.get("/api/v1/trainings")).json["items"] == []


async def test_parameters_of_an_api_request_are_the_ones_in_force(api: Client) -> None:
    created = await api.post("/api/v1/trainings", training(parameters={"epochs": 2, "seed": 9}))

    assert created.status == 201
    record = (await api.get(f"/api/v1/trainings/{created.json['runId']}")).json["record"]
    assert record["parameters"]["epochs"] == 2 and record["parameters"]["seed"] == 9


async def test_an_invalid_predict_request_is_422(api: Client) -> None:
    assert (await api.post("/api/v1/predict", {"logs": []})).problem["status"] == 422
    assert (await api.post("/api/v1/predict", {"lines": ["x"]})).problem["status"] == 422


async def test_a_body_over_the_limit_is_413(api: Client) -> None:
    reply = await api.post("/api/v1/predict", {"logs": ["x" * 5000]})
    assert reply.status == 413
    assert "4096 bytes" in reply.problem["detail"]


async def test_an_unknown_job_is_404_on_every_job_route(api: Client) -> None:
    for method, path in [("GET", "/api/v1/trainings/0123456789ab"), ("DELETE", "/api/v1/trainings/0123456789ab"),
                         ("GET", "/api/v1/trainings/0123456789ab/events"), ("POST", "/api/v1/models/0123456789ab/promote"),
                         ("GET", "/api/v1/trainings/NOT..an.id")]:
        reply = await api.request(method, path)
        assert reply.status == 404, (method, path)
        assert "no training job with id" in reply.problem["detail"]


async def test_an_unknown_route_is_404_and_a_wrong_method_405_as_problems(api: Client) -> None:
    assert "no such API route" in (await api.get("/api/v1/nothing")).problem["detail"]
    reply = await api.request("PUT", "/api/v1/models")
    assert reply.status == 405
    assert reply.problem["title"] == "Method Not Allowed"


async def test_cancelling_a_training_that_ended_is_409(api: Client) -> None:
    run = (await api.post("/api/v1/trainings", training())).json["runId"]
    for _ in range(100):
        if (await api.get(f"/api/v1/trainings/{run}")).json["state"] == "failed":  # no logs to train on
            break
        await asyncio.sleep(0.05)
    reply = await api.delete(f"/api/v1/trainings/{run}")
    assert reply.status == 409
    assert "has already ended" in reply.problem["detail"]
    promote = await api.post(f"/api/v1/models/{run}/promote")
    assert promote.status == 409
    assert "trained no model" in promote.problem["detail"]


async def test_the_console_is_served_with_a_strict_content_security_policy(api: Client) -> None:
    page = await api.as_(None).get("/")
    assert page.status == 200 and "<script src=\"/console/console.js\">" in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert (await api.as_(None).get("/console/console.js")).status == 200
    assert (await api.as_(None).get("/console/secrets.txt")).status == 404


async def test_the_tokens_never_reach_the_log(api: Client, caplog: pytest.LogCaptureFixture) -> None:
    await api.post("/api/v1/trainings", training())
    await api.as_("y" * 30).get("/api/v1/trainings")
    assert RW not in caplog.text and RO not in caplog.text
