"""The root of the settings: `Settings`, its sections sorted from the flat variable names, and
`load_settings`, which reads the environment and names every problem at once without echoing a value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from training_controller.config.sections import (
    HealthSettings,
    HttpSettings,
    LauncherSettings,
    LogSourceSettings,
    NatsSettings,
    StoreSettings,
    TrainingSettings,
    _Section,
)
from training_controller.core.trainers import Catalogue, CatalogueError, nulog_trainer


class ConfigError(Exception):
    """The environment does not make a usable configuration; the message names every problem."""


class Settings(_Section):
    """Configuration of the training controller."""

    nats: NatsSettings
    logs: LogSourceSettings = Field(default_factory=LogSourceSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    launch: LauncherSettings = Field(default_factory=LauncherSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _from_flat_names(cls, data: Any) -> Any:
        """Accept the flat variable names (lower case) and sort them into their sections."""
        if not isinstance(data, Mapping):
            return data
        flat = {k: v for k, v in data.items() if k not in cls.model_fields}
        unknown = sorted(set(flat) - set(_ENV_NAMES))
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(u.upper() for u in unknown)}")
        nested = _nest(cls, flat)
        return _merge(nested, {k: v for k, v in data.items() if k in cls.model_fields})

    @model_validator(mode="after")
    def _selected_adapters_are_configured(self) -> Settings:
        problems = [f"{name.upper()} is required when {sel.upper()}={value}" for sel, value, name in self._missing()]
        try:
            self.catalogue()
        except CatalogueError as e:
            problems.append(str(e))
        if self.launch.kind in ("kubernetes", "kubeflow") and self.store.kind == "local":
            problems.append(
                f"LAUNCHER={self.launch.kind} needs OBJECT_STORE=minio: a training pod cannot read local files"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _missing(self) -> list[tuple[str, str, str]]:
        return missing_for_selectors(lambda name: _lookup(self, name))

    def catalogue(self) -> Catalogue:
        """The trainer catalogue: the built-in `nulog`, with the training settings as its defaults, and what
        TRAINERS adds; raises CatalogueError naming every problem."""
        t = self.training
        nulog = nulog_trainer(
            epochs=t.epochs, seed=t.seed, max_lines=t.max_lines, device=t.device, max_workers=t.max_workers,
            gpus=self.launch.kubernetes.gpu_count, model_format=t.model_format,
        )
        return Catalogue.load(t.trainers, nulog=nulog)

    def jobs_dir(self) -> Path:
        """Where the local launcher keeps its jobs."""
        if self.launch.local_jobs_dir is not None:
            return self.launch.local_jobs_dir
        assert self.store.local_dir is not None
        return self.store.local_dir.parent / f"{self.store.local_dir.name}-jobs"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from environment variables (names in any case); unknown variables are ignored."""
        known = {k.lower(): v for k, v in env.items() if k.lower() in _ENV_NAMES}
        return cls.model_validate(known)


# Which settings each selected adapter needs: (selector, value) -> variables.
_REQUIRED_BY: dict[tuple[str, str], tuple[str, ...]] = {
    ("log_source", "files"): ("log_files_dir",),
    ("log_source", "elasticsearch"): ("es_endpoint",),
    ("log_source", "opensearch"): ("es_endpoint",),
    ("object_store", "local"): ("local_store_dir",),
    ("object_store", "minio"): ("minio_server_url", "minio_access_key", "minio_secret_key"),
    ("launcher", "kubernetes"): ("nulog_train_image_name",),
    ("launcher", "kubeflow"): ("nulog_train_image_name",),
}


def missing_for_selectors(get: Any) -> list[tuple[str, str, str]]:
    """(selector, value, variable) for each setting the selected adapters need and lack."""
    missing = []
    for (selector, value), names in _REQUIRED_BY.items():
        if get(selector) == value:
            missing += [(selector, value, n) for n in names if get(n) in (None, "")]
    return missing


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _env_names(model: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """Every variable name (lower case) of a section tree -> the path of attributes that holds it."""
    names: dict[str, tuple[str, ...]] = {}
    for field_name, field in model.model_fields.items():
        sub = _section_type(field.annotation)
        if sub is not None:
            names.update({k: (field_name, *path) for k, path in _env_names(sub).items()})
        else:
            names[field.alias or field_name] = (field_name,)
    return names


def _nest(model: type[BaseModel], flat: Mapping[str, Any]) -> dict[str, Any]:
    """The flat values sorted into the section tree of `model`, keyed by alias at the leaves."""
    out: dict[str, Any] = {}
    for field_name, field in model.model_fields.items():
        sub = _section_type(field.annotation)
        if sub is not None:
            out[field_name] = _nest(sub, flat)
        elif (field.alias or field_name) in flat:
            out[field.alias or field_name] = flat[field.alias or field_name]
    return out


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, Mapping) else v
    return out


def _lookup(settings: BaseModel, name: str) -> Any:
    value: Any = settings
    for attr in _ENV_NAMES[name]:
        value = getattr(value, attr)
    return value


_ENV_NAMES = _env_names(Settings)
# A section's name must never be a variable's too, or `Settings(launcher=...)` could mean either.
assert not _ENV_NAMES.keys() & Settings.model_fields.keys() - {"log_level"}, "a section shadows a variable"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment; raises ConfigError naming every problem."""
    env = os.environ if env is None else env
    try:
        return Settings.from_env(env)
    except ValidationError as e:
        problems = []
        for item in e.errors(include_url=False, include_input=False):
            name = str(item["loc"][-1]).upper() if item["loc"] else ""
            message = str(item["msg"]).removeprefix("Value error, ")
            if item["type"] == "missing":
                problems.append(f"{name} is required and not set")
            elif name:
                problems.append(f"{name}: {message}")
            else:
                problems.extend(message.split("; "))
        if not any("is required when" in p for p in problems):
            # Field errors stop pydantic before the cross-field check; run it on the raw values too.
            raw = {k.lower(): v for k, v in env.items()}
            problems += [
                f"{n.upper()} is required when {s.upper()}={v}"
                for s, v, n in missing_for_selectors(lambda name: raw.get(name, _default(name)))
            ]
        raise ConfigError("invalid configuration: " + "; ".join(dict.fromkeys(problems))) from None


def _default(name: str) -> Any:
    model: type[BaseModel] = Settings
    path = _ENV_NAMES[name]
    for attr in path[:-1]:
        sub = _section_type(model.model_fields[attr].annotation)
        assert sub is not None
        model = sub
    return model.model_fields[path[-1]].default
