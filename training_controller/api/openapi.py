"""The OpenAPI 3.1 document of /api/v1, generated from the route table and the same pydantic models the
routes parse and answer with (and the wire contract's, where the API reuses them).

`python -m training_controller.api.openapi > docs/openapi.json` writes it; a test fails when the committed
copy differs from what the code says. The controller serves it at /api/v1/openapi.json.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from training_controller import __version__
from training_controller.api.problems import PROBLEM_JSON, ProblemDetails
from training_controller.api.routes import OPERATIONS, Operation
from training_controller.api.schemas import EventData

REF = "#/components/schemas/{model}"


def _models() -> list[tuple[type[BaseModel], str]]:
    found: dict[tuple[type[BaseModel], str], None] = {}
    for op in OPERATIONS:
        if op.body is not None:
            found[(op.body, "validation")] = None
        if op.reply is not None:
            found[(op.reply, "serialization")] = None
    found[(ProblemDetails, "serialization")] = None
    found[(EventData, "serialization")] = None
    return list(found)


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", "")
        prop.pop("title", None)
        params.append({"name": name, "in": "query", "required": False, "description": description, "schema": prop})
    return params


def _problem(status: int) -> dict[str, Any]:
    return {"description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": REF.format(model="ProblemDetails")}}}}


def _operation(op: Operation, refs: dict[tuple[type[BaseModel], str], dict[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.name, "summary": op.summary, "tags": [op.path.split("/")[1].split(".")[0]]}
    params: list[dict[str, Any]] = []
    for name in re.findall(r"{(\w+)}", op.path):
        params.append({"name": name, "in": "path", "required": True, "description": "The training job's id.",
                       "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$", "maxLength": 64}})
    if op.query is not None:
        params += _query_parameters(op.query)
    if op.events:
        params.append({"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                       "description": "The id of the last event received: the stream goes on after it."})
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True,
                              "content": {"application/json": {"schema": refs[(op.body, "validation")]}}}
    responses: dict[str, Any] = {}
    if op.events:
        responses["200"] = {
            "description": "Server-Sent Events: `phase`, `progress`, `trainer` and `log` events, each with the "
            "stream sequence as its `id` and an EventData as its data, then `end` once the training has ended.",
            "content": {"text/event-stream": {"schema": refs[(EventData, "serialization")]}},
        }
    elif op.reply is not None:
        responses[str(op.status)] = {"description": HTTPStatus(op.status).phrase,
                                     "content": {"application/json": {"schema": refs[(op.reply, "serialization")]}}}
    else:
        responses[str(op.status)] = {"description": "This document.",
                                     "content": {"application/json": {"schema": {"type": "object"}}}}
    statuses = {401, *op.errors} | ({403} if op.write else set())
    for status in sorted(statuses):
        responses[str(status)] = _problem(status)
    out["responses"] = responses
    return out


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document as a dictionary."""
    models = _models()
    refs, schemas = models_json_schema(models, ref_template=REF)
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        paths.setdefault(op.url, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Training controller",
            "version": __version__,
            "description": "The REST API of the NuLog training controller: trainings, their events, models, "
            "predictions. Every route needs a bearer token (setting API_TOKENS; read-only tokens may not "
            "write); errors are RFC 9457 problem details. Generated from training_controller/api by "
            "`python -m training_controller.api.openapi`; do not edit by hand.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "A token of API_TOKENS (NAME:ROLE:TOKEN)."}},
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
