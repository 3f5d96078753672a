"""Following a Job with the kubernetes launcher, against a local server that speaks the Kubernetes API wire format.

What is asserted is what a real API server would receive and send: the watch's resourceVersion when it
resumes, the relist after 410 Gone, the pod log's timestamps when a broken stream resumes, and how conditions,
pod phases and log lines become the port's events (trainer output, WorkerState, StillRunning, Finished).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from nulog.protocol import DoneEvent, ErrorEvent, ProgressEvent, StageEvent, encode_event
from training_controller.core.errors import LauncherForbidden
from training_controller.core.ports import (
    Finished,
    LauncherEvent,
    LogLine,
    StillRunning,
    TrainerOutput,
    WorkerState,
)

from .kube_fixtures import NS, collect, make_launcher, modified, training_spec
from .kube_server import FakeKubeServer, condition, status

SPEC = training_spec()


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


