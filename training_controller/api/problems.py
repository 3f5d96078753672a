"""Errors of the REST API as RFC 9457 problem details (`application/problem+json`).

Every error an /api route answers is one: a `Problem` raised by a route, a core error translated by what
the caller can do about it (unknown job 404, a state that forbids the request 409, an invalid request 422,
a backend away for now 503 with Retry-After), aiohttp's own (unknown route 404, wrong method 405, body too
large 413), and anything unexpected as a 500 whose cause goes to the log, never to the client. The `type`
is `about:blank`, so `title` is the status's phrase and `detail` says what went wrong with this request.
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from training_controller.core.errors import (
    Conflict,
    ControllerError,
    IllegalTransition,
    InvalidRequest,
    JobNotFound,
    TemporaryError,
)
from training_controller.messages import describe

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
API_PREFIX = "/api/"


class ProblemDetails(BaseModel):
    """An error, as RFC 9457 describes it."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem; about:blank here.")
    title: str = Field(description="The HTTP status's phrase.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request, in a sentence or more.")
    instance: str | None = Field(default=None, description="The path of the request.")
    errors: list[str] | None = Field(default=None, description="Each problem of an invalid request: `field: what`.")


class Problem(Exception):
    """An error an API route answers with; `status` is its HTTP status."""

    def __init__(
        self, status: int, detail: str, *, errors: list[str] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    @classmethod
    def invalid(cls, status: int, what: str, error: ValidationError) -> Problem:
        """A request part (`what`: body, query) that does not validate, each problem named."""
        problems = describe(error).split("; ")
        return cls(status, f"invalid {what}: {'; '.join(problems)}", errors=problems)

    def response(self, instance: str | None) -> web.Response:
        body = ProblemDetails(
            title=HTTPStatus(self.status).phrase, status=self.status, detail=self.detail, instance=instance,
            errors=self.errors,
        )
        return web.Response(
            status=self.status,
            text=body.model_dump_json(exclude_none=True),
            content_type=PROBLEM_JSON,
            headers=self.headers,
        )


def from_core(error: ControllerError) -> Problem:
    """The problem a core error is to the caller."""
    if isinstance(error, JobNotFound):
        return Problem(404, str(error))
    if isinstance(error, Conflict | IllegalTransition):
        return Problem(409, str(error))
    if isinstance(error, InvalidRequest):
        return Problem(422, str(error))
    if isinstance(error, TemporaryError):
        retry = max(1, math.ceil(error.delay))
        return Problem(503, f"{error}; try again in {retry}s", headers={"Retry-After": str(retry)})
    return Problem(500, f"the controller could not do this: {error}")


def _from_http(e: web.HTTPException, request: web.Request, max_body_bytes: int) -> Problem:
    if isinstance(e, web.HTTPRequestEntityTooLarge):
        return Problem(413, f"the request body is larger than the limit of {max_body_bytes} bytes")
    if isinstance(e, web.HTTPNotFound):
        return Problem(404, f"no such API route: {request.path}")
    if isinstance(e, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(e.allowed_methods))
        return Problem(405, f"{request.method} is not allowed on {request.path}; allowed: {allowed}",
                       headers={"Allow": allowed})
    return Problem(e.status, e.text or HTTPStatus(e.status).phrase, headers=dict(e.headers))


def is_api(request: web.Request) -> bool:
    return request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")


def problems_middleware(*, max_body_bytes: int) -> Any:
    """Every error of an /api route as problem details; other paths keep aiohttp's own answers."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if not is_api(request):
            return await handler(request)
        try:
            return await handler(request)
        except Problem as p:
            return p.response(request.path)
        except ControllerError as e:
            return from_core(e).response(request.path)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return _from_http(e, request, max_body_bytes).response(request.path)
        except Exception:  # a bug: the client gets a 500 without internals, the log the traceback
            log.exception("%s %s failed", request.method, request.path)
            return Problem(500, "internal error; the controller's log has the details").response(request.path)

    return middleware
