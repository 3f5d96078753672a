"""A Kubernetes API server on 127.0.0.1, as far as the kubernetes launcher uses it, speaking the real wire format.

No cluster can be installed here, so the contract tests point the official client at this server instead. It
answers the way kube-apiserver does: `Status` objects for errors (409 AlreadyExists, 403 Forbidden, 410
Expired), `JobList`/`PodList` with `metadata.resourceVersion`, watch streams as chunked JSON lines
(`{"type":"MODIFIED","object":{...}}`), and pod logs as chunked text with RFC3339Nano timestamps when asked.

Watches can be scripted: each watch request takes the next entry of `watch_script` (a list of events, pauses
in seconds, and callables that change the server's state and may return an event to send, streamed and then ended as the API server ends a watch at its timeout, or an HTTP status code to answer
with). Unscripted, a watch sends the stored Jobs changed after its resourceVersion, then ends.
Every request is recorded, with its query and JSON body, for the tests to assert on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any = None


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A `Status` object as kube-apiserver sends it with an error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def condition(kind: str, *, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    """A Job condition with status True, as the Job controller writes it."""
    c: dict[str, Any] = {
        "type": kind,
        "status": "True",
        "lastProbeTime": "2026-01-01T00:05:00Z",
        "lastTransitionTime": "2026-01-01T00:05:00Z",
    }
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


@dataclass
class FakeKubeServer:
    """The launcher's slice of the Kubernetes API, served from a thread with its own event loop."""

    namespace: str = "opni-training"
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    pod_logs: dict[str, list[str]] = field(default_factory=dict)
    watch_script: list[Any] = field(default_factory=list)
    create_error: dict[str, Any] | None = None  # a Status to answer every create with
    list_error: dict[str, Any] | None = None  # a Status to answer every (non-watch) list of jobs with
    log_error: dict[str, Any] | None = None  # a Status to answer every request for a pod's log with
    log_break_after: dict[str, int] = field(default_factory=dict)  # pod -> lines sent before the first stream breaks
    idle_watch_seconds: float = 0.05  # an unscripted watch: an empty stream that ends after this
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rv = itertools.count(100)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- state helpers for tests -----------------------------------------------------------------------

    def next_rv(self) -> str:
        return str(next(self._rv))

    def job_object(self, name: str, *, conditions: list[dict[str, Any]] | None = None, active: int = 1,
                   labels: dict[str, str] | None = None, store: bool = True) -> dict[str, Any]:
        """A Job as the API returns it, with a new resourceVersion; stored under its name unless `store` is False
        (a later state of the Job, for a scripted watch event)."""
        job = self.jobs.get(name) or {
            "kind": "Job",
            "apiVersion": "batch/v1",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": labels or {},
            },
            "spec": {
                "backoffLimit": 2,
                "completions": 1,
                "parallelism": 1,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "0000"}},
                "template": {
                    "metadata": {"labels": labels or {}},
                    "spec": {"containers": [{"name": "train", "image": "nulog-train:test"}], "restartPolicy": "Never"},
                },
            },
        }
        job = json.loads(json.dumps(job))
        job["metadata"]["resourceVersion"] = self.next_rv()
        job["status"] = {"startTime": "2026-01-01T00:00:01Z", "uncountedTerminatedPods": {}, "ready": 0, "terminating": 0}
        if conditions:
            job["status"]["conditions"] = conditions
            job["status"]["failed" if any(c["type"] == "Failed" for c in conditions) else "succeeded"] = 1
        else:
            job["status"]["active"] = active
        if store:
            self.jobs[name] = job
        return job

    def add_pod(self, name: str, *, job_id: str, phase: str = "Running", lines: list[str] | None = None) -> None:
        """A pod of the Job, with the log its `train` container writes."""
        self.pods[name] = {
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": self.next_rv(),
                "creationTimestamp": f"2026-01-01T00:00:{len(self.pods):02d}Z",
                "labels": {
                    "job-name": f"nulog-train-{job_id}",
                    "batch.kubernetes.io/job-name": f"nulog-train-{job_id}",
                    "training-controller/job-id": job_id,
                    "app.kubernetes.io/name": "nulog-train",
                },
            },
            "spec": {"containers": [{"name": "train", "image": "nulog-train:test"}], "restartPolicy": "Never"},
            "status": {"phase": phase},
        }
        self.pod_logs[name] = list(lines or [])

    def current_rv(self) -> str:
        """The resourceVersion of a list: the newest version among the stored objects."""
        versions = [int(o["metadata"]["resourceVersion"]) for o in [*self.jobs.values(), *self.pods.values()]]
        return str(max(versions, default=99))

    def of(self, method: str, path_end: str) -> list[Recorded]:
        """The recorded requests with this method whose path ends with `path_end`."""
        return [r for r in self.requests if r.method == method and r.path.endswith(path_end)]

    def watches(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/jobs") and r.query.get("watch", "").lower() == "true"]

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> FakeKubeServer:
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="fake-kube-apiserver", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the fake Kubernetes API server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        ns = "/namespaces/{ns}"
        app.router.add_post(f"/apis/batch/v1{ns}/jobs", self._create_job)
        app.router.add_get(f"/apis/batch/v1{ns}/jobs", self._list_jobs)
        app.router.add_delete(f"/apis/batch/v1{ns}/jobs/{{name}}", self._delete_job)
        app.router.add_get(f"/api/v1{ns}/pods", self._list_pods)
        app.router.add_get(f"/api/v1{ns}/pods/{{name}}/log", self._pod_log)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    # -- handlers --------------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Recorded:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        rec = Recorded(request.method, request.path, dict(request.query), body)
        self.requests.append(rec)
        return rec

    @staticmethod
    def _status_response(body: dict[str, Any]) -> web.Response:
        return web.json_response(body, status=body["code"])

    async def _create_job(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if self.create_error is not None:
            return self._status_response(self.create_error)
        name = rec.body["metadata"]["name"]
        if name in self.jobs:
            return self._status_response(
                status(409, "AlreadyExists", f'jobs.batch "{name}" already exists', name=name, group="batch", kind="jobs")
            )
        job = json.loads(json.dumps(rec.body))
        job["metadata"].update(
            uid=str(uuid.uuid4()), resourceVersion=self.next_rv(), creationTimestamp="2026-01-01T00:00:00Z", generation=1
        )
        job["status"] = {}
        self.jobs[name] = job
        return web.json_response(job, status=201)

    def _selected(self, objects: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
        field_sel = query.get("fieldSelector", "")
        label_sel = query.get("labelSelector", "")
        out = []
        for obj in objects:
            meta = obj["metadata"]
            if field_sel and field_sel != f"metadata.name={meta['name']}":
                continue
            labels = meta.get("labels") or {}
            if label_sel and any(labels.get(k) != v for k, _, v in (p.partition("=") for p in label_sel.split(","))):
                continue
            out.append(obj)
        return out

    async def _list_jobs(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if rec.query.get("watch", "").lower() == "true":
            return await self._watch(request)
        if self.list_error is not None:
            return self._status_response(self.list_error)
        items = self._selected(list(self.jobs.values()), rec.query)
        meta: dict[str, Any] = {"resourceVersion": self.current_rv()}
        if "limit" in rec.query:  # pages, with an opaque continue token as the API server hands out
            start = int(rec.query.get("continue") or 0)
            end = start + int(rec.query["limit"])
            if end < len(items):
                meta["continue"] = str(end)
                meta["remainingItemCount"] = len(items) - end
            items = items[start:end]
        return web.json_response(
            {
                "kind": "JobList",
                "apiVersion": "batch/v1",
                "metadata": meta,
                # Items of a list carry neither kind nor apiVersion.
                "items": [{k: v for k, v in j.items() if k not in ("kind", "apiVersion")} for j in items],
            }
        )

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        if self.watch_script:
            entry = self.watch_script.pop(0)
        else:
            # Unscripted: the changes to stored Jobs after the requested version, as a real watch sends them.
            since = int(request.query.get("resourceVersion") or 0)
            changed = [
                {"type": "MODIFIED", "object": job}
                for job in self._selected(list(self.jobs.values()), dict(request.query))
                if int(job["metadata"]["resourceVersion"]) > since
            ]
            entry = [*changed, self.idle_watch_seconds]
        if isinstance(entry, int):
            reason, message = {
                410: ("Expired", "too old resource version: 1 (200)"),
                403: ("Forbidden", 'jobs.batch is forbidden: cannot watch resource "jobs" in API group "batch"'),
            }.get(entry, ("InternalError", "an error on the server has prevented the request from succeeding"))
            return self._status_response(status(entry, reason, message))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for item in entry:
            if isinstance(item, int | float):
                await asyncio.sleep(item)
                continue
            if callable(item):  # a change made while the watch is open; it may return the event to send
                item = item()
                if item is None:
                    continue
            await response.write((json.dumps(item) + "\n").encode())
        await response.write_eof()
        return response

    async def _delete_job(self, request: web.Request) -> web.Response:
        await self._record(request)
        name = request.match_info["name"]
        job = self.jobs.pop(name, None)
        if job is None:
            return self._status_response(
                status(404, "NotFound", f'jobs.batch "{name}" not found', name=name, group="batch", kind="jobs")
            )
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "group": "batch", "kind": "jobs", "uid": job["metadata"]["uid"]},
            }
        )

    async def _list_pods(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        items = self._selected(list(self.pods.values()), rec.query)
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": self.current_rv()}, "items": items}
        )

    async def _pod_log(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        name = request.match_info["name"]
        if self.log_error is not None:
            return self._status_response(self.log_error)
        if name not in self.pods:
            return self._status_response(status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods"))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        since = rec.query.get("sinceSeconds")
        break_after = self.log_break_after.pop(name, None)
        for i, line in enumerate(self.pod_logs.get(name, [])):
            at = _T0 + timedelta(milliseconds=i)
            if since and at < datetime.now(UTC) - timedelta(seconds=int(since)):
                continue
            if break_after is not None and i == break_after:
                assert request.transport is not None
                request.transport.close()  # the connection drops in the middle of the chunked stream
                return response
            if rec.query.get("timestamps", "").lower() == "true":
                line = f"{at.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z {line}"  # RFC3339Nano, fixed width
            await response.write((line + "\n").encode())
            await asyncio.sleep(0.001)
        await response.write_eof()
        return response
