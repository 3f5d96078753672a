"""Cancelling, listing and checking the kubernetes launcher's Jobs, against a local server that speaks the
Kubernetes API wire format: the DELETE's propagationPolicy, the wait until no pod of the job runs, the
pages of a list, the health check.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from pathlib import Path

import pytest

from training_controller.adapters.launchers.kubernetes import KubernetesLauncher
from training_controller.config import KubernetesSettings
from training_controller.core.errors import LauncherForbidden, LauncherUnavailable

from .kube_fixtures import NS, TRAINING_LABELS, make_launcher, training_spec
from .kube_server import FakeKubeServer, condition, status

SPEC = training_spec()
LABELS = TRAINING_LABELS


# -- cancel, list, health -----------------------------------------------------------------------------------


async def test_cancel_deletes_the_job_with_background_propagation(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    await launcher.launch(SPEC)

    await launcher.cancel("abc123")

    [delete] = kube.of("DELETE", f"/apis/batch/v1/namespaces/{NS}/jobs/nulog-train-abc123")
    assert delete.query.get("propagationPolicy") == "Background" or (delete.body or {}).get("propagationPolicy") == "Background"
    assert kube.jobs == {}


async def test_cancel_of_a_job_that_is_gone_is_fine(kube: FakeKubeServer) -> None:
    await make_launcher(kube).cancel("abc123")

    assert len(kube.of("DELETE", "/jobs/nulog-train-abc123")) == 1


async def test_list_jobs_maps_job_conditions_to_states(kube: FakeKubeServer) -> None:
    def labels(job_id: str) -> dict[str, str]:
        return {**LABELS, "training-controller/job-id": job_id}

    kube.job_object("nulog-train-run1", labels=labels("run1"), active=1)
    kube.job_object("nulog-train-ok1", labels=labels("ok1"), conditions=[condition("Complete")])
    kube.job_object(
        "nulog-train-bad1",
        labels=labels("bad1"),
        conditions=[condition("Failed", reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")],
    )
    kube.job_object("someone-else", labels={"app.kubernetes.io/name": "other"})

    jobs = {j.job_id: j for j in await make_launcher(kube).list_jobs()}

    assert set(jobs) == {"run1", "ok1", "bad1"}
    assert jobs["run1"].state == "running"
    assert jobs["ok1"].state == "succeeded"
    assert jobs["bad1"].state == "failed"
    assert jobs["bad1"].message == "BackoffLimitExceeded: Job has reached the specified backoff limit"
    [listing] = [r for r in kube.requests if r.path.endswith("/jobs")]
    assert listing.query["labelSelector"] == "app.kubernetes.io/name=nulog-train"


async def test_list_jobs_follows_the_continue_token_across_pages(kube: FakeKubeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        kube.job_object(f"nulog-train-job{i}", labels={**LABELS, "training-controller/job-id": f"job{i}"})
    launcher = make_launcher(kube)
    monkeypatch.setattr(launcher.api, "list_all", functools.partial(launcher.api.list_all, page_size=2))

    jobs = await launcher.list_jobs()

    assert sorted(j.job_id for j in jobs) == [f"job{i}" for i in range(5)]
    pages = [r.query for r in kube.requests if r.path.endswith("/jobs")]
    assert [p.get("continue") for p in pages] == [None, "2", "4"]


async def test_list_jobs_without_permission_is_a_permanent_error(kube: FakeKubeServer) -> None:
    kube.list_error = status(403, "Forbidden", 'jobs.batch is forbidden: cannot list resource "jobs"')

    with pytest.raises(LauncherForbidden, match=r'verbs: \["list"\]'):
        await make_launcher(kube).list_jobs()


async def test_ping_lists_one_job_and_reports_api_errors(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    assert await launcher.ping() is True
    assert kube.requests[-1].query["limit"] == "1"

    kube.list_error = status(503, "ServiceUnavailable", "the server is currently unable to handle the request")
    assert await launcher.ping() is False


async def test_from_environment_reads_the_kubeconfig_named_by_kubeconfig(
    kube: FakeKubeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "me", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
                "current-context": "fake",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a cluster
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    launcher = KubernetesLauncher.from_environment(KubernetesSettings(namespace=NS, image_name="nulog-train"))

    assert await launcher.ping() is True
    assert kube.requests[-1].path == f"/apis/batch/v1/namespaces/{NS}/jobs"


# -- cancel waits ----------------------------------------------------------------------------------------------


async def test_cancel_returns_only_once_no_pod_of_the_job_runs(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    await launcher.launch(SPEC)
    kube.add_pod("nulog-train-abc123-r1", job_id="abc123")
    kube.pod_stop_seconds = 0.6  # the trainer takes its time to stop after SIGTERM

    started = time.monotonic()
    await launcher.cancel("abc123")

    assert time.monotonic() - started >= 0.5
    assert kube.pods == {} and kube.jobs == {}
    delete_at = kube.requests.index(kube.of("DELETE", "/jobs/nulog-train-abc123")[0])
    pod_lists = [r for r in kube.requests[delete_at:] if r.path.endswith("/pods")]
    assert len(pod_lists) >= 2 and pod_lists[0].query["labelSelector"] == "training-controller/job-id=abc123"


async def test_cancel_of_a_deleted_job_whose_pods_still_run_waits_for_them(kube: FakeKubeServer) -> None:
    kube.add_pod("nulog-train-abc123-r1", job_id="abc123", phase="Running")
    kube.pods["nulog-train-abc123-r1"]["metadata"]["deletionTimestamp"] = "2026-01-01T00:30:00Z"

    def stopped() -> None:
        kube.pods.clear()

    waiting = asyncio.create_task(make_launcher(kube).cancel("abc123"))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    stopped()
    await asyncio.wait_for(waiting, 5)


async def test_cancel_whose_pods_outlast_the_timeout_is_a_temporary_error(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube, cancel_timeout_seconds=0.3)
    await launcher.launch(SPEC)
    kube.add_pod("nulog-train-abc123-stuck", job_id="abc123")
    kube.pod_stop_seconds = None  # on a node that no longer answers

    with pytest.raises(LauncherUnavailable, match="nulog-train-abc123-stuck still run"):
        await launcher.cancel("abc123")

