"""What the cluster launchers' tests share: the training spec, launchers pointed at the fake API server, and the
two validators of the bodies they send: `kubernetes-validate --strict` for built-in kinds, and the PyTorchJob
CRD's own OpenAPI v3 schema (`pytorchjob_crd_schema.yaml`) for PyTorchJobs."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from nulog.objectstore import MinioConfig
from nulog.protocol import JobArgs
from training_controller.adapters.launchers.kubernetes import ClusterLauncher, KubernetesLauncher
from training_controller.config import KubernetesSettings
from training_controller.core.ports import JobSpec, LauncherEvent

from .kube_server import FakeKubeServer

NS = "opni-training"
K8S_VERSION = kubernetes_validate.latest_version()
MINIO = MinioConfig(url="http://minio.opni-training.svc:9000")
TRAINING_LABELS = {  # of every object of the training abc123
    "app.kubernetes.io/name": "nulog-train",
    "app.kubernetes.io/managed-by": "training-controller",
    "training-controller/job-id": "abc123",
}
PYTORCHJOB_SCHEMA = Path(__file__).with_name("pytorchjob_crd_schema.yaml")


def training_spec(job_id: str = "abc123", **options: Any) -> JobSpec:
    """The spec of a training as the runner hands it to a launcher; `options` are JobSpec's (workers, image, ...)."""
    args = JobArgs(
        job_id=job_id,
        data=(f"s3://training-logs/{job_id}/windows.jsonl.gz",),
        output=f"s3://opni-nulog-models/{job_id}",
        epochs=3,
        seed=7,
        max_lines=5000,
        device="cuda",
    )
    return JobSpec(job_id=job_id, args=args, **options)


SETTINGS = dict(
    namespace=NS,
    image_name="rancher/nulog-train",
    image_tag="v0.1.0",
    request_timeout_seconds=5.0,
    watch_timeout_seconds=5,
    poll_seconds=0.05,
    log_drain_seconds=5.0,
    cancel_timeout_seconds=5.0,
)


def make_launcher(
    kube: FakeKubeServer | None,
    cls: type[ClusterLauncher] = KubernetesLauncher,
    *,
    minio: MinioConfig = MINIO,
    still_running_seconds: float = 10.0,
    **settings: Any,
) -> ClusterLauncher:
    """A launcher of `cls` whose client talks to the fake server (or, without one, to nothing: bodies only)."""
    configuration = client.Configuration(host=kube.url if kube else "http://127.0.0.1:1")
    return cls(
        client.ApiClient(configuration),
        KubernetesSettings(**{**SETTINGS, **settings}),
        minio=minio,
        still_running_seconds=still_running_seconds,
    )


async def collect(launcher: ClusterLauncher, job_id: str, timeout: float = 20) -> list[LauncherEvent]:
    async def run() -> list[LauncherEvent]:
        return [e async for e in launcher.events(job_id)]

    return await asyncio.wait_for(run(), timeout)


def modified(obj: dict) -> dict:
    return {"type": "MODIFIED", "object": obj}


def validate_strict(obj: dict[str, Any]) -> None:
    """Fail the test unless `obj` passes `kubernetes-validate --strict` (unknown fields rejected)."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is not valid for Kubernetes {e.version}: {path}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        pytest.fail(e.message)


# -- the PyTorchJob CRD's schema, checked as the API server checks a custom resource -----------------------


def _closed(schema: Any) -> Any:
    """The schema with unknown properties rejected wherever it lists properties (fieldValidation=Strict)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _list_map_keys(validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]) -> Any:
    """x-kubernetes-list-type: map: the items' keys are unique, as the API server requires."""
    if not isinstance(instance, list):
        return
    seen: set[tuple[Any, ...]] = set()
    for item in instance:
        key = tuple(item.get(k, (schema.get("items") or {}).get("properties", {}).get(k, {}).get("default")) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate entries for key {dict(zip(keys, key, strict=True))}")
        seen.add(key)


_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _format(validator: Any, fmt: str, instance: Any, schema: dict[str, Any]) -> Any:
    low_high = _RANGES.get(fmt)
    if low_high and isinstance(instance, int) and not low_high[0] <= instance <= low_high[1]:
        yield jsonschema.ValidationError(f"{instance} is out of the {fmt} range")


_CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-list-map-keys": _list_map_keys, "format": _format}
)


@functools.cache
def _pytorchjob_validator() -> Any:
    return _CRDValidator(_closed(yaml.safe_load(PYTORCHJOB_SCHEMA.read_text())))


def validate_pytorchjob(obj: dict[str, Any]) -> None:
    """Fail the test unless `obj` is a valid PyTorchJob by the CRD's OpenAPI v3 schema, unknown fields rejected."""
    errors = sorted(_pytorchjob_validator().iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors)
        pytest.fail(f"PyTorchJob/{obj['metadata']['name']} does not follow the CRD's schema: {problems}")
