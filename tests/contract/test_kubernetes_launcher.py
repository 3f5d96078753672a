"""The kubernetes launcher against a local server that speaks the Kubernetes API wire format.

The official client is pointed at the server, so what is asserted is what a real API server would receive:
the Job body as sent, the watch's resourceVersion when it resumes, the relist after 410 Gone, the DELETE's
propagationPolicy, and how the answers (409, 403, conditions, pod logs) become the launcher's results.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client

from nulog.objectstore import MinioConfig
from nulog.protocol import DoneEvent, ErrorEvent, ProgressEvent, StageEvent, encode_event
from training_controller.adapters.launchers.kubernetes import KubernetesLauncher
from training_controller.config import ConfigError, KubernetesSettings, load_settings
from training_controller.core.errors import LauncherForbidden, LauncherUnavailable, PermanentError
from training_controller.core.ports import (
    Finished,
    LauncherEvent,
    LogLine,
    StillRunning,
    TrainerOutput,
    WorkerState,
)

from .kube_fixtures import NS, collect, make_launcher, modified, training_spec, validate_strict
from .kube_server import FakeKubeServer, condition, status

SPEC = training_spec()
LABELS = {
    "app.kubernetes.io/name": "nulog-train",
    "app.kubernetes.io/managed-by": "training-controller",
    "training-controller/job-id": "abc123",
}
POD_LABELS = {**LABELS, "training-controller/role": "master"}


def progress(step: int = 1, **fields: object) -> ProgressEvent:
    values = {"epoch": 1, "epochs": 1, "step": step, "steps": 6, "loss": 0.5, "percent": 50.0, "elapsed_s": 1.0,
              "eta_s": 10.0, **fields}
    return ProgressEvent(**values)


def kinds(events: list[LauncherEvent]) -> list[str]:
    """What each event is; the workers' states (reported as the pods are seen) are left out."""
    names = {TrainerOutput: "event", LogLine: "log", Finished: "finished", StillRunning: "still running"}
    return [names[type(e)] for e in events if not isinstance(e, WorkerState)]


def told(events: list[LauncherEvent]) -> list[LauncherEvent]:
    """The trainer's output and the end, without the workers' states."""
    return [e for e in events if not isinstance(e, WorkerState | StillRunning)]


# -- launch -------------------------------------------------------------------------------------------------


async def test_launch_sends_the_training_job_as_a_batch_v1_job(kube: FakeKubeServer) -> None:
    await make_launcher(kube).launch(SPEC)

    [create] = kube.of("POST", f"/apis/batch/v1/namespaces/{NS}/jobs")
    job = create.body
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "nulog-train-abc123"
    assert job["metadata"]["namespace"] == NS
    assert job["metadata"]["labels"] == LABELS
    spec = job["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["activeDeadlineSeconds"] == 6 * 3600
    assert spec["ttlSecondsAfterFinished"] == 86400
    assert spec["podFailurePolicy"] == {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "NotIn", "values": [0]}},
        ]
    }
    template = spec["template"]
    assert template["metadata"]["labels"] == POD_LABELS
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    [container] = pod["containers"]
    assert container["name"] == "train"
    assert container["image"] == "rancher/nulog-train:v0.1.0"
    assert container["command"] + container["args"] == SPEC.command("python")
    assert container["command"] == ["python", "-m", "nulog.job"]
    assert container["args"][:2] == ["--job-id", "abc123"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["MINIO_SERVER_URL"] == {"name": "MINIO_SERVER_URL", "value": "http://minio.opni-training.svc:9000"}
    for name in ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": "training-controller", "key": name}}}
    assert "serviceAccountName" not in pod and "nodeSelector" not in pod and "tolerations" not in pod


async def test_launch_applies_the_optional_pod_settings(kube: FakeKubeServer) -> None:
    launcher = make_launcher(
        kube,
        gpu_resource="amd.com/gpu",
        gpu_count=2,
        backoff_limit=0,
        active_deadline_seconds=600,
        ttl_seconds_after_finished=60,
        service_account="nulog-train",
        credentials_secret="minio-creds",
        access_key_key="accesskey",
        secret_key_key="secretkey",
        node_selector={"gpu": "true"},
        tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        image_pull_secrets=("regcred",),
        resource_requests={"cpu": "2", "memory": "8Gi"},
    )
    await launcher.launch(SPEC)

    job = kube.of("POST", "/jobs")[0].body
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert container["resources"] == {"limits": {"amd.com/gpu": "2"}, "requests": {"cpu": "2", "memory": "8Gi"}}
    assert pod["serviceAccountName"] == "nulog-train"
    assert pod["nodeSelector"] == {"gpu": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs == {
        "MINIO_ACCESS_KEY": {"name": "minio-creds", "key": "accesskey"},
        "MINIO_SECRET_KEY": {"name": "minio-creds", "key": "secretkey"},
    }


async def test_launch_without_gpu_count_sets_no_gpu_limit(kube: FakeKubeServer) -> None:
    await make_launcher(kube, gpu_count=0).launch(SPEC)

    container = kube.of("POST", "/jobs")[0].body["spec"]["template"]["spec"]["containers"][0]
    assert "limits" not in container.get("resources", {})


async def test_the_job_as_sent_holds_no_secret_value(kube: FakeKubeServer) -> None:
    await make_launcher(kube).launch(SPEC)

    env = kube.of("POST", "/jobs")[0].body["spec"]["template"]["spec"]["containers"][0]["env"]
    secret_vars = [e for e in env if "KEY" in e["name"] or "SECRET" in e["name"] or "PASSWORD" in e["name"]]
    assert secret_vars and all("value" not in e and "secretKeyRef" in e["valueFrom"] for e in secret_vars)


async def test_launch_of_a_job_that_exists_already_counts_as_launched(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    await launcher.launch(SPEC)
    await launcher.launch(SPEC)  # after a restart: the API answers 409 AlreadyExists

    assert len(kube.of("POST", "/jobs")) == 2
    assert list(kube.jobs) == ["nulog-train-abc123"]


async def test_launch_without_permission_names_the_missing_rbac_rule(kube: FakeKubeServer) -> None:
    kube.create_error = status(
        403,
        "Forbidden",
        'jobs.batch is forbidden: User "system:serviceaccount:opni-training:training-controller" cannot create '
        'resource "jobs" in API group "batch" in the namespace "opni-training"',
        group="batch",
        kind="jobs",
    )
    with pytest.raises(LauncherForbidden) as caught:
        await make_launcher(kube).launch(SPEC)

    message = str(caught.value)
    assert isinstance(caught.value, PermanentError)
    assert "create jobs.batch in namespace opni-training" in message
    assert 'verbs: ["create"]' in message and 'resources: ["jobs"]' in message and 'apiGroups: ["batch"]' in message
    assert "cannot create resource" in message  # the API server's own explanation is kept


async def test_launch_when_the_api_server_fails_is_a_temporary_error(kube: FakeKubeServer) -> None:
    kube.create_error = status(500, "InternalError", "etcdserver: request timed out")
    with pytest.raises(LauncherUnavailable, match="etcdserver: request timed out"):
        await make_launcher(kube).launch(SPEC)


async def test_launch_when_the_api_server_is_unreachable_is_a_temporary_error() -> None:
    configuration = client.Configuration(host="http://127.0.0.1:9")
    configuration.retries = 0
    launcher = KubernetesLauncher(
        client.ApiClient(configuration), KubernetesSettings(namespace=NS, image_name="nulog", request_timeout_seconds=2)
    )
    with pytest.raises(LauncherUnavailable, match="cannot reach the Kubernetes API"):
        await launcher.launch(SPEC)
    assert await launcher.ping() is False


async def test_a_job_id_that_cannot_name_a_job_is_refused_before_any_request(kube: FakeKubeServer) -> None:
    with pytest.raises(PermanentError, match="cannot name a Kubernetes Job"):
        await make_launcher(kube).launch(training_spec("Bad_ID"))
    assert kube.requests == []


# -- events -------------------------------------------------------------------------------------------------


async def test_pod_log_lines_become_progress_and_log_events_then_success(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    await launcher.launch(SPEC)
    kube.add_pod(
        "nulog-train-abc123-x7k2p",
        job_id="abc123",
        lines=[
            encode_event(StageEvent(stage="loading")),
            "loading 5000 lines from /tmp/data",
            encode_event(progress()),
            encode_event(DoneEvent(metrics={"loss": 0.5})),
        ],
    )
    done = kube.job_object("nulog-train-abc123", conditions=[condition("SuccessCriteriaMet"), condition("Complete")])
    kube.watch_script = [[0.3, modified(done)]]

    events = await collect(launcher, "abc123")

    assert told(events)[:-1] == [
        TrainerOutput(StageEvent(stage="loading")),
        LogLine("loading 5000 lines from /tmp/data"),
        TrainerOutput(progress()),
        TrainerOutput(DoneEvent(metrics={"loss": 0.5})),
    ]
    assert isinstance(events[-1], Finished) and events[-1].succeeded
    assert kinds(events).count("finished") == 1
    [log_request] = kube.of("GET", "/pods/nulog-train-abc123-x7k2p/log")
    assert log_request.query["container"] == "train"
    assert log_request.query["follow"].lower() == "true"
    pod_lists = kube.of("GET", f"/api/v1/namespaces/{NS}/pods")
    assert pod_lists[0].query["labelSelector"] == "training-controller/job-id=abc123"


async def test_a_broken_log_stream_is_resumed_without_repeating_lines(kube: FakeKubeServer) -> None:
    lines = [encode_event(progress(i)) for i in range(6)]
    kube.add_pod("nulog-train-abc123-z", job_id="abc123", lines=lines)
    kube.log_break_after["nulog-train-abc123-z"] = 3
    kube.job_object("nulog-train-abc123")
    kube.watch_script = [[0.5, lambda: modified(kube.job_object("nulog-train-abc123", conditions=[condition("Complete")]))]]

    events = await collect(make_launcher(kube), "abc123")

    assert [e.event.step for e in told(events)[:-1]] == [0, 1, 2, 3, 4, 5]
    first, second = kube.of("GET", "/pods/nulog-train-abc123-z/log")
    assert "sinceSeconds" not in first.query and first.query["timestamps"].lower() == "true"
    assert int(second.query["sinceSeconds"]) > 60  # from before the last line passed on (the log is dated 2026-01-01)


async def test_lines_of_a_job_that_ended_before_the_pod_was_seen_are_still_reported(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube, poll_seconds=30)  # the log thread would not look again by itself
    kube.add_pod("nulog-train-abc123-a", job_id="abc123", phase="Succeeded", lines=[encode_event(DoneEvent())])
    kube.job_object("nulog-train-abc123", conditions=[condition("Complete")])  # the first list sees it ended

    events = await collect(launcher, "abc123")

    assert kinds(events) == ["event", "finished"]
    assert events[-1].succeeded


async def test_a_failed_condition_ends_with_its_reason_and_the_last_error_line(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    kube.job_object("nulog-train-abc123", active=1)
    kube.add_pod(
        "nulog-train-abc123-q9",
        job_id="abc123",
        phase="Failed",
        lines=[
            encode_event(StageEvent(stage="loading")),
            encode_event(ErrorEvent(message="the data files hold no log lines")),
        ],
    )
    failed = kube.job_object(
        "nulog-train-abc123",
        conditions=[
            condition(
                "FailureTarget",
                reason="PodFailurePolicy",
                message="Container train for pod opni-training/nulog-train-abc123-q9 failed with exit code 2 "
                "matching FailJob rule at index 1",
            ),
            condition(
                "Failed",
                reason="PodFailurePolicy",
                message="Container train for pod opni-training/nulog-train-abc123-q9 failed with exit code 2 "
                "matching FailJob rule at index 1",
            ),
        ],
    )
    kube.watch_script = [[0.2, modified(failed)]]

    events = await collect(launcher, "abc123")

    final = events[-1]
    assert isinstance(final, Finished) and not final.succeeded
    assert final.message.startswith("PodFailurePolicy: Container train for pod")
    assert "exit code 2" in final.message
    assert final.message.endswith("last log line: the data files hold no log lines")


async def test_a_deadline_exceeded_job_fails_with_that_reason(kube: FakeKubeServer) -> None:
    kube.job_object("nulog-train-abc123")
    expired = kube.job_object(
        "nulog-train-abc123",
        conditions=[condition("Failed", reason="DeadlineExceeded", message="Job was active longer than specified deadline")],
        store=False,
    )
    kube.watch_script = [[modified(expired)]]

    events = await collect(make_launcher(kube), "abc123")

    assert told(events) == [
        Finished(succeeded=False, message="DeadlineExceeded: Job was active longer than specified deadline")
    ]


async def test_a_watch_that_ends_is_resumed_from_the_last_resource_version(kube: FakeKubeServer) -> None:
    listed = kube.job_object("nulog-train-abc123")  # what the first list returns
    running = kube.job_object("nulog-train-abc123", active=1, store=False)
    complete = kube.job_object("nulog-train-abc123", conditions=[condition("Complete")], store=False)
    kube.watch_script = [[modified(running)], [modified(complete)]]

    events = await collect(make_launcher(kube), "abc123")

    assert isinstance(events[-1], Finished) and events[-1].succeeded
    lists = [r for r in kube.of("GET", f"/apis/batch/v1/namespaces/{NS}/jobs") if "watch" not in r.query]
    assert len(lists) == 1 and lists[0].query["fieldSelector"] == "metadata.name=nulog-train-abc123"
    first, second = kube.watches()[:2]
    assert first.query["fieldSelector"] == second.query["fieldSelector"] == "metadata.name=nulog-train-abc123"
    assert first.query["resourceVersion"] == listed["metadata"]["resourceVersion"]
    assert second.query["resourceVersion"] == running["metadata"]["resourceVersion"]
    assert int(second.query["resourceVersion"]) > int(first.query["resourceVersion"])


async def test_a_watch_error_410_gone_makes_the_launcher_list_again(kube: FakeKubeServer) -> None:
    name = "nulog-train-abc123"
    first_list = kube.job_object(name)
    updated: dict = {}

    def job_changes_while_the_watch_is_open() -> None:
        updated.update(kube.job_object(name, active=1))

    expired = {"type": "ERROR", "object": status(410, "Expired", "too old resource version: 100 (250)")}
    kube.watch_script = [
        [job_changes_while_the_watch_is_open, expired],
        [lambda: modified(kube.job_object(name, conditions=[condition("Complete")], store=False))],
    ]

    events = await collect(make_launcher(kube), "abc123")

    assert isinstance(events[-1], Finished) and events[-1].succeeded
    job_requests = [r for r in kube.requests if r.path.endswith("/jobs") and r.method == "GET"]
    kinds = ["watch" if "watch" in r.query else "list" for r in job_requests]
    assert kinds[:4] == ["list", "watch", "list", "watch"]
    assert job_requests[1].query["resourceVersion"] == first_list["metadata"]["resourceVersion"]
    # The new watch starts from the new list, not from the version that expired.
    assert job_requests[3].query["resourceVersion"] == updated["metadata"]["resourceVersion"]


async def test_an_http_410_on_the_watch_also_makes_the_launcher_list_again(kube: FakeKubeServer) -> None:
    name = "nulog-train-abc123"
    kube.job_object(name)
    kube.watch_script = [410, [lambda: modified(kube.job_object(name, conditions=[condition("Complete")], store=False))]]

    events = await collect(make_launcher(kube), "abc123")

    assert isinstance(events[-1], Finished) and events[-1].succeeded
    job_requests = [r for r in kube.requests if r.path.endswith("/jobs") and r.method == "GET"]
    assert ["watch" if "watch" in r.query else "list" for r in job_requests][:3] == ["list", "watch", "list"]


async def test_a_deleted_job_ends_the_events_as_failed(kube: FakeKubeServer) -> None:
    running = kube.job_object("nulog-train-abc123")
    kube.watch_script = [[{"type": "DELETED", "object": running}]]

    events = await collect(make_launcher(kube), "abc123")

    assert kinds(events) == ["finished"]
    assert not events[-1].succeeded and "was deleted" in events[-1].message


async def test_a_job_that_does_not_exist_ends_the_events_as_failed(kube: FakeKubeServer) -> None:
    events = await collect(make_launcher(kube), "abc123")

    assert len(events) == 1 and not events[0].succeeded and "does not exist" in events[0].message


async def test_a_job_that_may_not_be_listed_fails_the_events_with_the_rbac_rule(kube: FakeKubeServer) -> None:
    kube.list_error = status(403, "Forbidden", 'jobs.batch is forbidden: cannot list resource "jobs"')

    with pytest.raises(LauncherForbidden, match=r'verbs: \["list"\]'):
        await collect(make_launcher(kube), "abc123")


async def test_a_job_that_may_not_be_watched_fails_the_events_with_the_rbac_rule(kube: FakeKubeServer) -> None:
    kube.job_object("nulog-train-abc123")
    kube.watch_script = [403]

    with pytest.raises(LauncherForbidden, match=r'verbs: \["watch"\]'):
        await collect(make_launcher(kube), "abc123")


async def test_a_server_error_on_the_watch_is_retried(kube: FakeKubeServer) -> None:
    kube.job_object("nulog-train-abc123")
    kube.watch_script = [503, [lambda: modified(kube.job_object("nulog-train-abc123", conditions=[condition("Complete")]))]]

    events = await collect(make_launcher(kube), "abc123")

    assert events[-1].succeeded
    assert len(kube.watches()) >= 2  # the first answered 503


async def test_a_log_without_permission_is_reported_and_the_job_is_still_followed(
    kube: FakeKubeServer, caplog: pytest.LogCaptureFixture
) -> None:
    kube.add_pod("nulog-train-abc123-p", job_id="abc123", lines=[encode_event(DoneEvent())])
    kube.log_error = status(403, "Forbidden", 'pods "nulog-train-abc123-p" is forbidden: cannot get resource "pods/log"')
    kube.job_object("nulog-train-abc123")
    kube.watch_script = [[0.3, lambda: modified(kube.job_object("nulog-train-abc123", conditions=[condition("Complete")]))]]

    events = await collect(make_launcher(kube), "abc123")

    assert kinds(events) == ["finished"] and events[-1].succeeded
    assert 'resources: ["pods/log"], verbs: ["get"]' in caplog.text
    assert len(kube.of("GET", "/pods/nulog-train-abc123-p/log")) == 1  # not asked again and again


async def test_stopping_to_follow_a_job_leaves_no_stream_behind(kube: FakeKubeServer) -> None:
    kube.job_object("nulog-train-abc123")
    kube.add_pod("nulog-train-abc123-p", job_id="abc123", lines=[encode_event(StageEvent(stage="training"))])
    kube.watch_script = [[3.0]]
    stream = make_launcher(kube).events("abc123")

    first = await asyncio.wait_for(anext(stream), 10)
    while isinstance(first, WorkerState):
        first = await asyncio.wait_for(anext(stream), 10)
    await stream.aclose()

    assert first == TrainerOutput(StageEvent(stage="training"))
    for _ in range(100):  # the watch thread was blocked in a quiet stream: closing must unblock it
        if not [t for t in threading.enumerate() if t.name.startswith("kube-") and t.name.endswith("-abc123")]:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("a thread following the job is still running after the events were closed")


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


# -- what the pod is given ----------------------------------------------------------------------------------


async def test_the_training_job_carries_the_minio_tls_settings_the_controller_was_given(kube: FakeKubeServer) -> None:
    minio = MinioConfig(url="https://minio.opni-training.svc:9000", verify_tls=True, ca_file=Path("/etc/minio/ca.crt"))
    await make_launcher(kube, minio=minio, minio_ca_secret="minio-ca").launch(SPEC)

    job = kube.of("POST", "/jobs")[0].body
    validate_strict(job)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MINIO_SERVER_URL"] == "https://minio.opni-training.svc:9000"
    assert env["MINIO_VERIFY_TLS"] == "true"
    assert env["MINIO_CA_FILE"] == "/etc/minio/ca.crt"
    # The same bundle, at the same path, from the Secret the settings name.
    assert {"name": "minio-ca", "mountPath": "/etc/minio/ca.crt", "subPath": "ca.crt", "readOnly": True} in container["volumeMounts"]
    assert {"name": "minio-ca", "secret": {"secretName": "minio-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in pod["volumes"]
    assert MinioConfig.from_env({k: v for k, v in env.items() if v is not None}).public_env() == minio.public_env()


async def test_a_ca_bundle_can_come_from_a_config_map_and_verification_off_reaches_the_pod(kube: FakeKubeServer) -> None:
    minio = MinioConfig(url="https://minio:9000", verify_tls=False, ca_file=Path("/etc/ssl/minio/bundle.pem"))
    await make_launcher(kube, minio=minio, minio_ca_config_map="minio-ca-bundle").launch(SPEC)

    pod = kube.of("POST", "/jobs")[0].body["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MINIO_VERIFY_TLS"] == "false"
    assert {"name": "minio-ca", "configMap": {"name": "minio-ca-bundle", "items": [{"key": "bundle.pem", "path": "bundle.pem"}]}} in pod["volumes"]


def test_a_ca_bundle_the_pod_could_not_get_is_refused_when_the_launcher_is_made() -> None:
    minio = MinioConfig(url="https://minio:9000", ca_file=Path("/etc/minio/ca.crt"))
    with pytest.raises(ValueError, match="MINIO_CA_SECRET or MINIO_CA_CONFIG_MAP"):
        make_launcher(None, minio=minio)


def test_without_a_ca_bundle_the_pod_mounts_none() -> None:
    job = make_launcher(None).build(SPEC)

    assert [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    assert "MINIO_CA_FILE" not in {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_spec_s_image_entrypoint_and_gpus_replace_the_defaults() -> None:
    spec = training_spec(image="registry.example/other-trainer:2", entrypoint=("python", "-m", "other.job"), gpus_per_worker=4)
    job = make_launcher(None, gpu_count=1).build(spec)

    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/other-trainer:2"
    assert container["command"] == ["python", "-m", "other.job"]
    assert container["command"] + container["args"] == spec.command("python")
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "4"}}
    no_gpu = make_launcher(None, gpu_count=1).build(training_spec(gpus_per_worker=0))
    assert "resources" not in no_gpu["spec"]["template"]["spec"]["containers"][0]


# -- following a quiet job, and its pod ---------------------------------------------------------------------


async def test_a_quiet_running_job_yields_still_running_at_least_every_interval(kube: FakeKubeServer) -> None:
    kube.job_object("nulog-train-abc123")
    kube.watch_script = [[1.2, lambda: modified(kube.job_object("nulog-train-abc123", conditions=[condition("Complete")]))]]
    stamps: list[float] = []
    events: list[LauncherEvent] = []

    async def follow() -> None:
        async for event in make_launcher(kube, still_running_seconds=0.25).events("abc123"):
            stamps.append(time.monotonic())
            events.append(event)

    started = time.monotonic()
    await asyncio.wait_for(follow(), 20)

    still = [t for t, e in zip(stamps, events, strict=True) if isinstance(e, StillRunning)]
    assert len(still) >= 3 and isinstance(events[-1], Finished) and events[-1].succeeded
    gaps = [b - a for a, b in zip([started, *still], still, strict=False)]
    assert max(gaps) < 0.25 + 0.2  # never much more than the interval of silence


async def test_a_pod_s_phase_changes_are_reported_as_worker_states(kube: FakeKubeServer) -> None:
    kube.job_object("nulog-train-abc123")
    kube.add_pod("nulog-train-abc123-w8", job_id="abc123", phase="Pending", labels={"training-controller/role": "master"})

    def starts() -> None:
        kube.pods["nulog-train-abc123-w8"]["status"] = {"phase": "Running"}

    def ends() -> dict:
        kube.end_pod("nulog-train-abc123-w8", exit_code=0)
        return modified(kube.job_object("nulog-train-abc123", conditions=[condition("Complete")]))

    kube.watch_script = [[0.3, starts, 0.3, ends]]

    events = await collect(make_launcher(kube), "abc123")

    states = [(e.index, e.role, e.name, e.state) for e in events if isinstance(e, WorkerState)]
    assert states == [
        (0, "master", "nulog-train-abc123-w8", "pending"),
        (0, "master", "nulog-train-abc123-w8", "running"),
        (0, "master", "nulog-train-abc123-w8", "succeeded"),
    ]
    assert [e for e in events if isinstance(e, WorkerState)][-1].message == "exit code 0 (Completed)"
    assert events[-1] == Finished(succeeded=True, message="the Job completed")


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


def test_the_new_settings_are_read_from_their_variables_and_one_ca_source_is_allowed() -> None:
    base = {"NATS_SERVER_URL": "nats://nats:4222", "LOG_FILES_DIR": "/tmp", "LOCAL_STORE_DIR": "/tmp/store"}
    kube = load_settings({**base, "MINIO_CA_SECRET": "minio-ca", "KUBE_CANCEL_TIMEOUT_SECONDS": "45"}).launch.kubernetes
    assert (kube.minio_ca_secret, kube.minio_ca_config_map, kube.cancel_timeout_seconds) == ("minio-ca", None, 45.0)
    assert load_settings({**base, "MINIO_CA_CONFIG_MAP": "minio-ca"}).launch.kubernetes.minio_ca_config_map == "minio-ca"

    with pytest.raises(ConfigError, match="MINIO_CA_CONFIG_MAP: set MINIO_CA_SECRET or MINIO_CA_CONFIG_MAP, not both"):
        load_settings({**base, "MINIO_CA_SECRET": "a", "MINIO_CA_CONFIG_MAP": "b"})
