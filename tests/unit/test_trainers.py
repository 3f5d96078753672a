"""The trainer catalogue: the built-in nulog, catalogues from YAML or JSON, parameters checked against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training_controller.config import ConfigError, Settings, load_settings
from training_controller.core.errors import InvalidRequest

BASE = {"NATS_SERVER_URL": "nats://x:4222", "LOG_FILES_DIR": "/tmp/logs", "LOCAL_STORE_DIR": "/tmp/store"}
CATALOGUE = """
trainers:
  nulog:
    max_workers: 3
    parameters:
      epochs: {type: int, default: 5, minimum: 1, maximum: 100}
  drain-baseline:
    command: ["python", "-m", "my_trainer"]
    gpus: 0
    publishes_model: false
    parameters:
      depth: {type: int, default: 4, minimum: 2, maximum: 8}
      similarity: {type: float, default: 0.4, minimum: 0, maximum: 1}
      mode: {type: str, default: fast, choices: [fast, exact]}
"""


def settings(**env: str) -> Settings:
    return load_settings({**BASE, **env})


def test_without_a_catalogue_nulog_is_built_in_with_the_training_settings_as_defaults() -> None:
    catalogue = settings(TRAIN_EPOCHS="7", TRAIN_MAX_WORKERS="2").catalogue()

    assert sorted(catalogue.trainers) == ["nulog"]
    nulog = catalogue.get("nulog")
    assert nulog.gpus == 1 and nulog.max_workers == 2
    assert nulog.resolve(None, model="nulog")["epochs"] == 7
    assert nulog.resolve({"workers": 2}, model="nulog")["workers"] == 2


def test_a_yaml_catalogue_adds_model_types_and_replaces_nulogs_entry(tmp_path: Path) -> None:
    path = tmp_path / "trainers.yaml"
    path.write_text(CATALOGUE)

    catalogue = settings(TRAINERS=str(path)).catalogue()

    assert sorted(catalogue.trainers) == ["drain-baseline", "nulog"]
    drain = catalogue.get("drain-baseline")
    assert (drain.command, drain.gpus, drain.publishes_model) == (("python", "-m", "my_trainer"), 0, False)
    assert drain.resolve({"depth": 6}, model="drain-baseline") == {"workers": 1, "depth": 6, "similarity": 0.4, "mode": "fast"}
    assert catalogue.get("nulog").resolve({"epochs": 9}, model="nulog") == {"workers": 1, "epochs": 9}


def test_an_inline_json_catalogue_works_as_well() -> None:
    inline = json.dumps({"trainers": {"tiny": {"gpus": 0, "parameters": {"n": {"type": "int", "default": 1}}}}})

    assert settings(TRAINERS=inline).catalogue().get("tiny").resolve({"n": 3}, model="tiny")["n"] == 3


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"epochs": 0}, "epochs must be at least 1, not 0"),
        ({"epochs": "many"}, "epochs must be an int, not 'many'"),
        ({"epochs": 1.5}, "epochs must be an int, not 1.5"),
        ({"workers": 9}, "workers must be at most 3, not 9"),
        ({"epocs": 3}, "unknown parameter 'epocs' for model nulog (known: epochs, workers)"),
    ],
)
def test_a_bad_parameter_is_named_with_what_is_wrong(tmp_path: Path, given: dict, says: str) -> None:
    path = tmp_path / "trainers.yaml"
    path.write_text(CATALOGUE)
    nulog = settings(TRAINERS=str(path)).catalogue().get("nulog")

    with pytest.raises(InvalidRequest, match=f"^invalid parameters: {says}$".replace("(", r"\(").replace(")", r"\)")):
        nulog.resolve(given, model="nulog")


def test_every_bad_parameter_is_named_in_one_message() -> None:
    nulog = settings().catalogue().get("nulog")

    with pytest.raises(InvalidRequest) as info:
        nulog.resolve({"epochs": -1, "device": "tpu", "bogus": 1}, model="nulog")

    message = str(info.value)
    assert "unknown parameter 'bogus'" in message and "epochs must be at least 1" in message
    assert "device must be one of 'auto', 'cpu', 'cuda', not 'tpu'" in message


def test_an_unknown_model_type_lists_the_known_ones() -> None:
    with pytest.raises(InvalidRequest, match="unknown model 'gpt'; this controller trains: nulog"):
        settings().catalogue().get("gpt")


def test_a_catalogue_that_does_not_validate_names_every_problem_in_one_message(tmp_path: Path) -> None:
    path = tmp_path / "trainers.yaml"
    path.write_text(
        "trainers:\n"
        "  a: {gpus: -1, command: []}\n"
        "  b: {parameters: {x: {type: int, default: 10, maximum: 5}, y: {type: colour}}}\n"
    )

    with pytest.raises(ConfigError) as info:
        settings(TRAINERS=str(path))

    message = str(info.value)
    assert message.startswith("invalid configuration: TRAINERS: ")
    for problem in ("trainers.a.gpus", "trainers.a.command: command must name a program",
                    "trainers.b.parameters.x: default must be at most 5, not 10", "trainers.b.parameters.y.type"):
        assert problem in message, problem


@pytest.mark.parametrize(
    ("value", "says"),
    [("/no/such/trainers.yaml", "no such file"), ("{not json", "cannot read the catalogue"), ('{"trainer": {}}', "must be a mapping with a `trainers` mapping")],
)
def test_a_catalogue_that_cannot_be_read_says_why(value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        settings(TRAINERS=value)


def test_serve_with_an_invalid_catalogue_exits_2_with_one_message(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), **BASE, "TRAINERS": '{"trainers": {"x": {"gpus": "lots"}}}'}

    done = subprocess.run(
        [sys.executable, "-m", "training_controller", "serve"], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "TRAINERS: trainers.x.gpus" in lines[0], done.stderr
