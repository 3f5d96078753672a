"""The kubernetes launcher against a real cluster: runs only when KUBECONFIG is set.

Each test launches a tiny Job in `KUBE_TEST_NAMESPACE` (default `default`) through the launcher, with the
launcher's own Job shape (labels, podFailurePolicy, security context, emptyDir) but a busybox command instead
of the training, follows it to its end through the watch and the pod log, and deletes it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
from kubernetes import client

from nulog.protocol import JobArgs, ProgressEvent, encode_event
from training_controller.adapters.launchers.kubernetes import KubernetesLauncher
from training_controller.config import KubernetesSettings
from training_controller.core.ports import Finished, JobSpec, LauncherEvent, LogLine, TrainerOutput

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="KUBECONFIG is not set"),
]

NAMESPACE = os.environ.get("KUBE_TEST_NAMESPACE", "default")
IMAGE = os.environ.get("KUBE_TEST_IMAGE", "busybox:1.36")
PROGRESS = ProgressEvent(epoch=1, epochs=1, step=1, steps=1, loss=0.1, percent=100.0, elapsed_s=1, eta_s=0)


class ShellLauncher(KubernetesLauncher):
    """The real launcher, whose Job runs a shell script instead of the training entrypoint."""

    def __init__(self, script: str, api_client: client.ApiClient, settings: KubernetesSettings) -> None:
        super().__init__(api_client, settings)
        self.script = script

    def build(self, spec: JobSpec) -> dict[str, Any]:
        job = super().build(spec)
        container = job["spec"]["template"]["spec"]["containers"][0]
        container["command"], container["args"] = ["sh", "-c", self.script], []
        return job


def launcher_running(script: str) -> ShellLauncher:
    name, _, tag = IMAGE.rpartition(":")
    # No GPU, no MinIO secret in a test namespace; a short deadline in case the image cannot be pulled.
    settings = KubernetesSettings(
        namespace=NAMESPACE, image_name=name, image_tag=tag, gpu_count=0, credentials_secret=None,
        active_deadline_seconds=240, poll_seconds=1,
    )
    base = KubernetesLauncher.from_environment(settings)
    return ShellLauncher(script, base.api_client, settings)


async def run_to_the_end(launcher: KubernetesLauncher, job_id: str) -> list[LauncherEvent]:
    await launcher.launch(JobSpec(job_id, JobArgs(job_id=job_id, data=("/tmp/none",), output="/tmp/out")))
    try:
        return await asyncio.wait_for(_collect(launcher, job_id), 300)
    finally:
        await launcher.cancel(job_id)


async def _collect(launcher: KubernetesLauncher, job_id: str) -> list[LauncherEvent]:
    return [e async for e in launcher.events(job_id)]


async def test_a_job_that_prints_progress_is_followed_to_success() -> None:
    job_id = f"live-{uuid.uuid4().hex[:8]}"
    launcher = launcher_running(f"echo '{encode_event(PROGRESS)}'; echo 'a log line' >&2; sleep 2")

    assert await launcher.ping()
    events = await run_to_the_end(launcher, job_id)

    assert TrainerOutput(PROGRESS) in events
    assert LogLine("a log line") in events
    assert isinstance(events[-1], Finished) and events[-1].succeeded, events[-1].message
    assert job_id not in {j.job_id for j in await launcher.list_jobs() if j.state == "running"}


async def test_a_failing_command_fails_the_job_at_once_through_the_pod_failure_policy() -> None:
    job_id = f"live-{uuid.uuid4().hex[:8]}"
    launcher = launcher_running("echo '{\"event\":\"error\",\"message\":\"no data\"}'; exit 3")

    events = await run_to_the_end(launcher, job_id)

    final = events[-1]
    assert isinstance(final, Finished) and not final.succeeded
    assert final.message.startswith("PodFailurePolicy"), final.message  # not retried up to backoffLimit
    assert "no data" in final.message


async def test_two_workers_run_as_an_indexed_job_whose_pods_carry_their_roles() -> None:
    job_id = f"live-{uuid.uuid4().hex[:8]}"
    # Each pod prints its rank; the master's line is the one followed.
    launcher = launcher_running(
        f"echo '{encode_event(PROGRESS)}'; echo rank=$JOB_COMPLETION_INDEX of $WORLD_SIZE at $MASTER_ADDR; sleep 5"
    )
    spec = JobSpec(job_id, JobArgs(job_id=job_id, data=("/tmp/none",), output="/tmp/out"), workers=2)

    await launcher.launch(spec)
    try:
        events = await asyncio.wait_for(_collect(launcher, job_id), 300)
        roles = {
            p["metadata"]["labels"].get("training-controller/role")
            for p in await asyncio.to_thread(launcher.api.pods_of, job_id)
        }
    finally:
        await launcher.cancel(job_id)

    assert isinstance(events[-1], Finished) and events[-1].succeeded, events[-1].message
    assert LogLine(f"rank=0 of 2 at nulog-train-{job_id}-0.nulog-train-{job_id}") in events
    assert roles == {"master", "worker"}
