"""The routes of /api/v1: one table says each route's method, path, role, bodies and errors, and both the
aiohttp router and the OpenAPI document are built from it. Handlers are thin: parse, call one use case of
the controller, answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import KW_ONLY, dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from training_controller.api.events import TrainingEvents
from training_controller.api.inference import InferenceClient
from training_controller.api.problems import Problem
from training_controller.api.schemas import (
    PHASES_OF_STATE,
    STATE_OF_PHASE,
    ModelsList,
    ModelView,
    Training,
    TrainingCreate,
    TrainingCreated,
    TrainingsPage,
    TrainingsQuery,
)
from training_controller.config import ApiToken
from training_controller.core.controller import TrainingController
from training_controller.core.errors import InvalidRequest
from training_controller.core.gateway import workload_filters
from training_controller.core.intake import Submission
from training_controller.core.jobs import JobRecord
from training_controller.core.models import ModelInfo
from training_controller.core.queries import Interval, LogQuery
from training_controller.messages import JobId, PredictReply, PredictRequest

API_BASE = "/api/v1"
TOKEN = web.RequestKey("token", ApiToken)
# Keys of metrics.json that hold a score on held-out logs, the first one found is shown.
HELD_OUT_KEYS = ("held_out_score", "heldout_score", "held_out")
_JOB_ID: TypeAdapter[str] = TypeAdapter(JobId)


@dataclass(frozen=True)
class Operation:
    """One route of the API."""

    method: str
    path: str  # under API_BASE, with {name} parameters
    name: str  # the handler's name and the operationId
    summary: str
    write: bool = False  # needs a read-write token
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    status: int = 200
    reply: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    events: bool = False  # answers text/event-stream

    @property
    def url(self) -> str:
        return API_BASE + self.path


OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/trainings", "create_training", "Start a training", write=True, body=TrainingCreate,
              status=201, reply=TrainingCreated, errors=(400, 413, 422, 503)),
    Operation("GET", "/trainings", "list_trainings", "List trainings, the most recent first, a page at a time",
              query=TrainingsQuery, reply=TrainingsPage, errors=(400,)),
    Operation("GET", "/trainings/{id}", "get_training", "One training: its state and whole record",
              reply=Training, errors=(404,)),
    Operation("DELETE", "/trainings/{id}", "cancel_training", "Cancel a training (a queued one at once, one "
              "under way is stopped, trainer first)", write=True, reply=Training, errors=(404, 409, 503)),
    Operation("GET", "/trainings/{id}/events", "training_events", "A training's events as Server-Sent Events: "
              "history, then phases, progress and log lines live until it ends; resumable with Last-Event-ID",
              errors=(400, 404, 503), events=True),
    Operation("GET", "/models", "list_models", "Every trained model with its metrics, and which is current",
              reply=ModelsList, errors=(503,)),
    Operation("POST", "/models/{id}/promote", "promote_model", "Make an earlier model current again, announced "
              "as a new model (model_ready, model_update)", write=True, reply=ModelView, errors=(404, 409, 503)),
    Operation("POST", "/predict", "predict", "Templates, scores and labels of log lines from the current model",
              body=PredictRequest, reply=PredictReply, errors=(400, 413, 422, 503)),
    Operation("GET", "/openapi.json", "openapi", "This API's OpenAPI 3.1 document"),
)


async def read_body(request: web.Request, model: type[BaseModel]) -> Any:
    """The request's JSON body as `model`: 413 when too large, 400 when not JSON, 422 when it does not fit."""
    raw = await request.read()  # raises HTTPRequestEntityTooLarge past the body limit
    try:
        data = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError) as e:
        raise Problem(400, f"the body is not valid JSON: {str(e)[:200] or type(e).__name__}") from None
    if not isinstance(data, dict):
        raise Problem(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise Problem.invalid(422, "request", e) from None


def read_query(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as e:
        raise Problem.invalid(400, "query", e) from None


def job_id_of(request: web.Request) -> str:
    value = request.match_info["id"]
    try:
        _JOB_ID.validate_python(value)
    except ValidationError:
        raise Problem(404, f"no training job with id {value[:64]!r}") from None
    return value


def reply(model: BaseModel, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=model.model_dump_json(), content_type="application/json", headers=headers)


def held_out_score(metrics: dict[str, Any]) -> float | None:
    for key in HELD_OUT_KEYS:
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def model_view(info: ModelInfo) -> ModelView:
    return ModelView(**info.to_json(), held_out_score=held_out_score(info.metrics))


@dataclass
class Routes:
    """The handlers of /api/v1."""

    controller: TrainingController
    _: KW_ONLY
    events: TrainingEvents
    inference: InferenceClient
    lookback_seconds: int
    openapi_spec: Any  # () -> the OpenAPI document
    stopping: asyncio.Event

    async def training(self, record: JobRecord) -> Training:
        queued = STATE_OF_PHASE[record.phase] == "pending"
        return Training(
            runId=record.job_id,
            state=STATE_OF_PHASE[record.phase],
            message=record.message,
            queue_position=await self.controller.queue_position(record.job_id) if queued else None,
            record=record,
        )

    def query_of(self, body: TrainingCreate) -> LogQuery:
        if body.time_intervals:
            intervals = tuple(Interval(start_ns=i.start_ts, end_ns=i.end_ts) for i in body.time_intervals)
        else:
            now_ns = time.time_ns()
            intervals = (Interval(start_ns=now_ns - self.lookback_seconds * 10**9, end_ns=now_ns),)
        return LogQuery(intervals=intervals, workloads=workload_filters(body.workloads or {}))

    async def create_training(self, request: web.Request) -> web.Response:
        body: TrainingCreate = await read_body(request, TrainingCreate)
        token = request[TOKEN]
        try:
            submitted = await self.controller.submit(Submission(
                self.query_of(body), request=body.model_dump(mode="json", exclude_none=True),
                requested_by=f"api:{token.name}", model=body.modelType, parameters=body.parameters,
            ))
        except InvalidRequest as e:
            raise Problem(422, str(e)) from None
        job_id = submitted.record.job_id
        created = TrainingCreated(runId=job_id, queue_position=submitted.queue_position)
        return reply(created, status=201, headers={"Location": f"{API_BASE}/trainings/{job_id}"})

    async def list_trainings(self, request: web.Request) -> web.Response:
        q: TrainingsQuery = read_query(request, TrainingsQuery)
        phases = [q.phase] if q.phase is not None else list(PHASES_OF_STATE[q.state]) if q.state else [None]
        records: list[JobRecord] = []
        for phase in phases:
            records += await self.controller.list_jobs(phase=phase, limit=q.limit, before_seq=q.cursor)
        records = sorted(records, key=lambda r: r.seq, reverse=True)[: q.limit]
        more = len(records) == q.limit and records[-1].seq > 0
        page = TrainingsPage(items=[await self.training(r) for r in records], next_cursor=records[-1].seq if more else None)
        return reply(page)

    async def get_training(self, request: web.Request) -> web.Response:
        return reply(await self.training(await self.controller.get_job(job_id_of(request))))

    async def cancel_training(self, request: web.Request) -> web.Response:
        job_id = job_id_of(request)
        await self.controller.get_job(job_id)  # 404 before 409
        try:
            record = await self.controller.cancel(job_id)
        except InvalidRequest as e:
            raise Problem(409, str(e)) from None
        return reply(await self.training(record))

    async def training_events(self, request: web.Request) -> web.StreamResponse:
        job_id = job_id_of(request)
        return await self.events.respond(
            request, job_id, record=lambda: self.controller.get_job(job_id), stopping=self.stopping
        )

    async def list_models(self, request: web.Request) -> web.Response:
        models = [model_view(m) for m in await self.controller.list_models()]
        current = next((m.job_id for m in models if m.current), None)
        return reply(ModelsList(models=models, current=current))

    async def promote_model(self, request: web.Request) -> web.Response:
        job_id = job_id_of(request)
        await self.controller.get_job(job_id)  # 404 for an unknown job
        try:
            info = await self.controller.promote_model(job_id)
        except InvalidRequest as e:
            raise Problem(409, str(e)) from None
        return reply(model_view(info))

    async def predict(self, request: web.Request) -> web.Response:
        body: PredictRequest = await read_body(request, PredictRequest)
        return reply(await self.inference.predict(body))

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self.openapi_spec())

