"""docs/openapi.json is what the route table and the models say, and it is a valid OpenAPI 3.1 document."""

from __future__ import annotations

import json
from pathlib import Path

from openapi_spec_validator import validate

from training_controller.api.openapi import document, render
from training_controller.api.routes import OPERATIONS

DOC = Path(__file__).parents[2] / "docs" / "openapi.json"


def test_committed_openapi_document_is_current() -> None:
    assert DOC.read_text() == render(), "run: python -m training_controller.api.openapi > docs/openapi.json"


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = json.loads(DOC.read_text())
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_route_is_documented_with_its_errors_and_the_bearer_scheme() -> None:
    doc = document()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "A token of API_TOKENS (NAME:ROLE:TOKEN)."}
    for op in OPERATIONS:
        documented = doc["paths"][op.url][op.method.lower()]
        assert "401" in documented["responses"], op.name
        assert ("403" in documented["responses"]) == op.write, op.name
        for status in op.errors:
            content = documented["responses"][str(status)]["content"]
            assert content == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
    body = doc["paths"]["/api/v1/trainings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TrainingCreate"}
    assert "TimeInterval" in doc["components"]["schemas"]  # the wire contract's model, reused
