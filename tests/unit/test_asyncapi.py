"""docs/asyncapi.yaml is what the models say, and it covers the whole wire contract."""

from __future__ import annotations

from pathlib import Path

import yaml

from training_controller.asyncapi import render
from training_controller.messages import Subjects

DOC = Path(__file__).parents[2] / "docs" / "asyncapi.yaml"


def test_committed_asyncapi_document_is_current() -> None:
    assert DOC.read_text() == render(), "run: training-controller asyncapi --output docs/asyncapi.yaml"


def test_every_subject_of_the_contract_is_a_channel() -> None:
    doc = yaml.safe_load(DOC.read_text())
    addresses = {c["address"] for c in doc["channels"].values() if c["address"]}
    subjects = {v for k, v in vars(Subjects).items() if k.isupper()} - {Subjects.TRAINING_LOGS}
    assert subjects | {"training_logs.{job_id}"} == addresses


def test_every_reference_resolves() -> None:
    doc = yaml.safe_load(DOC.read_text())

    def refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    found = list(refs(doc))
    assert len(found) > 20
    for ref in found:
        node = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert node, ref
