"""The trainer catalogue: for each model type, how it is trained and which parameters a request may set.

`nulog` is built in, with its defaults from the training settings, and is what a controller without a
catalogue offers. A catalogue (setting `TRAINERS`: a YAML or JSON file, or inline JSON) adds model types or
replaces `nulog`'s entry:

    trainers:
      nulog:
        gpus: 1                      # per worker; 0: needs no GPU, takes no GPU slot, no JobStart/JobEnd
        max_workers: 4               # one training across up to this many processes (PyTorch DDP)
        parameters:
          epochs: {type: int, default: 5, minimum: 1, maximum: 100}
      drain-baseline:
        command: ["python", "-m", "my_trainer"]   # the local launcher's entrypoint, before the arguments
        image: registry.example/drain-trainer:1.0  # the training image on Kubernetes
        gpus: 0
        publishes_model: false       # its files are archived, but never become the model inference loads
        parameters:
          depth: {type: int, default: 4, minimum: 2, maximum: 8}

Every trainer speaks the trainer contract (`nulog.protocol`): it gets the contract's arguments, and each
parameter that is not one of them as `--<name> <value>`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training_controller.core.errors import InvalidRequest

Scalar = int | float | str | bool
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}
# Parameters every trainer has, whatever its schema says.
WORKERS = "workers"


class CatalogueError(ValueError):
    """The catalogue does not validate; the message names every problem."""


class ParameterSpec(BaseModel):
    """One parameter a request may set: its type, default and bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["int", "float", "str", "bool"]
    default: Scalar | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Scalar, ...] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _default_fits(self) -> ParameterSpec:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is above maximum {self.maximum}")
        if self.default is not None:
            self.check("default", self.default)
        return self

    def check(self, name: str, value: Any) -> Scalar:
        """The value, of the declared type and within the bounds; raises ValueError saying why not."""
        kind = _TYPES[self.type]
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            if not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
                raise ValueError(f"{name} must be {'an' if self.type == 'int' else 'a'} {self.type}, not {value!r}")
            value = float(value)
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{name} must be at least {_n(self.minimum)}, not {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{name} must be at most {_n(self.maximum)}, not {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, self.choices))}, not {value!r}")
        return value


def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


class TrainerSpec(BaseModel):
    """How one model type is trained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: tuple[str, ...] | None = Field(
        default=None, description="The local launcher's entrypoint before the arguments; None: python -m nulog.job."
    )
    image: str | None = Field(default=None, description="The training image on Kubernetes; None: NULOG_TRAIN_IMAGE_*.")
    gpus: int = Field(default=1, ge=0, le=64, description="GPUs per worker; 0: no GPU, no GPU slot taken.")
    max_workers: int = Field(default=1, ge=1, le=256)
    publishes_model: bool = Field(default=True, description="Its model becomes the one inference services load.")
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)

    @field_validator("command")
    @classmethod
    def _command_not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("command must name a program")
        return value

    def schema(self) -> dict[str, ParameterSpec]:
        """Every parameter a request may set: `workers` (up to `max_workers`) and the trainer's own."""
        return {WORKERS: _workers_spec(self.max_workers), **self.parameters}

    def resolve(self, given: dict[str, Any] | None, *, model: str) -> dict[str, Scalar | None]:
        """The parameters in force: the defaults, overridden by `given`; raises InvalidRequest naming every
        unknown name and every bad value."""
        schema = self.schema()
        given = dict(given or {})
        problems = [
            f"unknown parameter {name!r} for model {model} (known: {', '.join(sorted(schema))})"
            for name in sorted(set(given) - set(schema))
        ]
        resolved: dict[str, Scalar | None] = {name: spec.default for name, spec in schema.items()}
        for name, value in given.items():
            if name in schema:
                try:
                    resolved[name] = schema[name].check(name, value)
                except ValueError as e:
                    problems.append(str(e))
        if problems:
            raise InvalidRequest("invalid parameters: " + "; ".join(problems))
        return resolved


def _workers_spec(max_workers: int) -> ParameterSpec:
    return ParameterSpec(type="int", default=1, minimum=1, maximum=max_workers, description="Worker processes.")


# The parameters of the built-in NuLog trainer that map onto the trainer contract's arguments.
NULOG_ARGUMENTS = ("epochs", "batch_size", "seed", "max_lines", "k", "device", "model_format")


class Catalogue(BaseModel):
    """Every model type this controller trains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trainers: dict[str, TrainerSpec]

    def get(self, model: str) -> TrainerSpec:
        spec = self.trainers.get(model)
        if spec is None:
            raise InvalidRequest(f"unknown model {model[:64]!r}; this controller trains: {', '.join(sorted(self.trainers))}")
        return spec

    @classmethod
    def load(cls, source: str | None, *, nulog: TrainerSpec) -> Catalogue:
        """The built-in catalogue with `source` (a file path or inline JSON) over it; raises CatalogueError."""
        trainers = {"nulog": nulog}
        if source:
            text = source.strip()
            try:
                raw = json.loads(text) if text.startswith("{") else yaml.safe_load(Path(text).read_text())
            except FileNotFoundError:
                raise CatalogueError(f"TRAINERS: no such file {text}") from None
            except (ValueError, yaml.YAMLError, OSError) as e:
                raise CatalogueError(f"TRAINERS: cannot read the catalogue: {str(e)[:300]}") from None
            if not isinstance(raw, dict) or not isinstance(raw.get("trainers"), dict):
                raise CatalogueError("TRAINERS: the catalogue must be a mapping with a `trainers` mapping")
            try:
                given = cls.model_validate(raw)
            except ValidationError as e:
                problems = [
                    f"trainers.{'.'.join(str(p) for p in item['loc'][1:])}: {str(item['msg']).removeprefix('Value error, ')}"
                    for item in e.errors(include_url=False, include_input=False)
                ]
                raise CatalogueError("TRAINERS: " + "; ".join(problems)) from None
            trainers.update(given.trainers)
        return cls(trainers=trainers)


def nulog_trainer(
    *, epochs: int, seed: int, max_lines: int | None, device: str, max_workers: int, gpus: int, model_format: str = "nulog"
) -> TrainerSpec:
    """The built-in NuLog trainer, with the training settings as its defaults and the contract's bounds."""
    return TrainerSpec(
        gpus=gpus,
        max_workers=max_workers,
        parameters={
            "epochs": ParameterSpec(type="int", default=epochs, minimum=1, maximum=1000, description="Training epochs."),
            "batch_size": ParameterSpec(type="int", default=None, minimum=1, maximum=65536, description="Lines per step (global)."),
            "seed": ParameterSpec(type="int", default=seed, minimum=0, description="Random seed."),
            "max_lines": ParameterSpec(type="int", default=max_lines, minimum=1, description="Train on a sample of this many lines."),
            "k": ParameterSpec(type="int", default=None, minimum=1, maximum=1000, description="Top-k of templates and scores."),
            "device": ParameterSpec(type="str", default=device, choices=("auto", "cpu", "cuda"), description="Where to train."),
            "model_format": ParameterSpec(
                type="str", default=model_format, choices=("nulog", "opni"),
                description="nulog: this project's model; opni: Opni's NuLog and files.",
            ),
        },
    )
