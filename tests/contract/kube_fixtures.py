"""What the cluster launchers' tests share: the training spec, launchers pointed at the fake API server, and the
validator of the bodies they send, `kubernetes-validate --strict`."""

from __future__ import annotations

import asyncio
from typing import Any

import kubernetes_validate
import pytest
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
