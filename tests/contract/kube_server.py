"""A Kubernetes API server on 127.0.0.1, as far as the cluster launchers use it, speaking the real wire format.

No cluster can be installed here, so the contract tests point the official client at this server instead. It
answers the way kube-apiserver does: `Status` objects for errors (409 AlreadyExists, 403 Forbidden, 410
Expired), lists with `metadata.resourceVersion`, watch streams as chunked JSON lines
(`{"type":"MODIFIED","object":{...}}`), and pod logs as chunked text with RFC3339Nano timestamps when asked.
It serves batch/v1 Jobs, kubeflow.org/v1 PyTorchJobs, Services, and pods with their logs (`kube_objects.py`); pods can be made the
way the Job controller makes those of an Indexed Job (completion-index annotation and label, hostname and
subdomain) and the way the Kubeflow Training Operator makes a PyTorchJob's (`<name>-master-0`,
`<name>-worker-<i>`, replica-type and replica-index labels). Deleting a Job or PyTorchJob deletes its pods
the way the garbage collector does: they get a deletionTimestamp, still run for `pod_stop_seconds`, then go
(or never, with `pod_stop_seconds=None`, as pods stuck on a lost node).

Watches can be scripted: each watch request takes the next entry of `watch_script` (a list of events, pauses
in seconds, and callables that change the server's state and may return an event to send, streamed and then
ended as the API server ends a watch at its timeout, or an HTTP status code to answer with). Unscripted, a
watch sends the stored objects changed after its resourceVersion, then ends.
Every request is recorded, with its query and JSON body, for the tests to assert on.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from .kube_objects import _T0, ClusterObjects, _copy, condition, status

__all__ = ["FakeKubeServer", "Recorded", "condition", "status"]
# Where each kind of object lives, its kind, and the kind of its list.
KINDS = {
    "jobs": ("/apis/batch/v1", "batch/v1", "Job", "JobList"),
    "pytorchjobs": ("/apis/kubeflow.org/v1", "kubeflow.org/v1", "PyTorchJob", "PyTorchJobList"),
}


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any = None


@dataclass
class FakeKubeServer(ClusterObjects):
    """The launchers' slice of the Kubernetes API, served from a thread with its own event loop."""

    namespace: str = "opni-training"
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pytorchjobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    pod_logs: dict[str, list[str]] = field(default_factory=dict)
    watch_script: list[Any] = field(default_factory=list)
    create_error: dict[str, Any] | None = None  # a Status to answer every create with
    list_error: dict[str, Any] | None = None  # a Status to answer every (non-watch) list of jobs with
    log_error: dict[str, Any] | None = None  # a Status to answer every request for a pod's log with
    patch_error: dict[str, Any] | None = None  # a Status to answer every patch of a pod with
    log_break_after: dict[str, int] = field(default_factory=dict)  # pod -> lines sent before the first stream breaks
    idle_watch_seconds: float = 0.05  # an unscripted watch: an empty stream that ends after this
    pod_stop_seconds: float | None = 0.3  # how long a deleted object's pods still run; None: for ever
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._start_counting()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def of(self, method: str, path_end: str) -> list[Recorded]:
        """The recorded requests with this method whose path ends with `path_end`."""
        return [r for r in self.requests if r.method == method and r.path.endswith(path_end)]

    def watches(self, plural: str = "jobs") -> list[Recorded]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith(f"/{plural}") and r.query.get("watch", "").lower() == "true"]

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
        for plural, (prefix, *_) in KINDS.items():
            app.router.add_post(f"{prefix}{ns}/{plural}", self._create(plural))
            app.router.add_get(f"{prefix}{ns}/{plural}", self._list(plural))
            app.router.add_get(f"{prefix}{ns}/{plural}/{{name}}", self._get(plural))
            app.router.add_delete(f"{prefix}{ns}/{plural}/{{name}}", self._delete(plural))
        app.router.add_post(f"/api/v1{ns}/services", self._create_service)
        app.router.add_get(f"/api/v1{ns}/pods", self._list_pods)
        app.router.add_patch(f"/api/v1{ns}/pods/{{name}}", self._patch_pod)
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

    def _store(self, plural: str) -> dict[str, dict[str, Any]]:
        return self.jobs if plural == "jobs" else self.pytorchjobs

    @staticmethod
    def _not_found(plural: str, name: str) -> dict[str, Any]:
        group = KINDS[plural][1].split("/")[0]
        return status(404, "NotFound", f'{plural}.{group} "{name}" not found', name=name, group=group, kind=plural)

    def _create(self, plural: str):
        async def handler(request: web.Request) -> web.Response:
            rec = await self._record(request)
            if self.create_error is not None:
                return self._status_response(self.create_error)
            name = rec.body["metadata"]["name"]
            store = self._store(plural)
            if name in store:
                group = KINDS[plural][1].split("/")[0]
                return self._status_response(
                    status(409, "AlreadyExists", f'{plural}.{group} "{name}" already exists', name=name, group=group, kind=plural)
                )
            obj = _copy(rec.body)
            obj["metadata"].update(
                uid=str(uuid.uuid4()), resourceVersion=self.next_rv(), creationTimestamp="2026-01-01T00:00:00Z", generation=1
            )
            obj["status"] = {}
            store[name] = obj
            return web.json_response(obj, status=201)

        return handler

    def _get(self, plural: str):
        async def handler(request: web.Request) -> web.Response:
            await self._record(request)
            obj = self._store(plural).get(request.match_info["name"])
            if obj is None:
                return self._status_response(self._not_found(plural, request.match_info["name"]))
            return web.json_response(obj)

        return handler

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

    def _list(self, plural: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            rec = await self._record(request)
            if rec.query.get("watch", "").lower() == "true":
                return await self._watch(request, plural)
            if self.list_error is not None:
                return self._status_response(self.list_error)
            items = self._selected(list(self._store(plural).values()), rec.query)
            meta: dict[str, Any] = {"resourceVersion": self.current_rv()}
            if "limit" in rec.query:  # pages, with an opaque continue token as the API server hands out
                start = int(rec.query.get("continue") or 0)
                end = start + int(rec.query["limit"])
                if end < len(items):
                    meta["continue"] = str(end)
                    meta["remainingItemCount"] = len(items) - end
                items = items[start:end]
            _, api_version, _, list_kind = KINDS[plural]
            # Items of a built-in list carry neither kind nor apiVersion; a custom resource's do.
            strip = ("kind", "apiVersion") if plural == "jobs" else ()
            return web.json_response(
                {
                    "kind": list_kind,
                    "apiVersion": api_version,
                    "metadata": meta,
                    "items": [{k: v for k, v in j.items() if k not in strip} for j in items],
                }
            )

        return handler

    async def _watch(self, request: web.Request, plural: str) -> web.StreamResponse:
        if self.watch_script:
            entry = self.watch_script.pop(0)
        else:
            # Unscripted: the changes to stored objects after the requested version, as a real watch sends them.
            since = int(request.query.get("resourceVersion") or 0)
            changed = [
                {"type": "MODIFIED", "object": obj}
                for obj in self._selected(list(self._store(plural).values()), dict(request.query))
                if int(obj["metadata"]["resourceVersion"]) > since
            ]
            entry = [*changed, self.idle_watch_seconds]
        if isinstance(entry, int):
            reason, message = {
                410: ("Expired", "too old resource version: 1 (200)"),
                403: ("Forbidden", f'{plural} is forbidden: cannot watch resource "{plural}"'),
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

    def _delete(self, plural: str):
        async def handler(request: web.Request) -> web.Response:
            await self._record(request)
            name = request.match_info["name"]
            obj = self._store(plural).pop(name, None)
            if obj is None:
                return self._status_response(self._not_found(plural, name))
            self._collect_garbage(name)
            group = KINDS[plural][1].split("/")[0]
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"name": name, "group": group, "kind": plural, "uid": obj["metadata"]["uid"]},
                }
            )

        return handler

    def _collect_garbage(self, owner: str) -> None:
        """What the garbage collector does once an owner is deleted: its Services go, its pods stop, then go."""
        for name, service in list(self.services.items()):
            if any(ref["name"] == owner for ref in service["metadata"].get("ownerReferences") or []):
                del self.services[name]
        owned = [n for n, p in self.pods.items() if any(r["name"] == owner for r in p["metadata"].get("ownerReferences") or [])]
        for name in owned:
            self.pods[name]["metadata"]["deletionTimestamp"] = "2026-01-01T00:30:00Z"
            if self.pod_stop_seconds is not None:
                assert self._loop is not None
                self._loop.call_later(self.pod_stop_seconds, self.pods.pop, name, None)

    async def _create_service(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        name = rec.body["metadata"]["name"]
        if name in self.services:
            return self._status_response(status(409, "AlreadyExists", f'services "{name}" already exists', name=name, kind="services"))
        service = _copy(rec.body)
        service["metadata"].update(uid=str(uuid.uuid4()), resourceVersion=self.next_rv())
        self.services[name] = service
        return web.json_response(service, status=201)

    async def _list_pods(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        items = self._selected(list(self.pods.values()), rec.query)
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": self.current_rv()}, "items": items}
        )

    async def _patch_pod(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        name = request.match_info["name"]
        if self.patch_error is not None:
            return self._status_response(self.patch_error)
        if request.content_type != "application/merge-patch+json":
            return self._status_response(status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {request.content_type}"))
        pod = self.pods.get(name)
        if pod is None:
            return self._status_response(status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods"))
        pod["metadata"].setdefault("labels", {}).update((rec.body.get("metadata") or {}).get("labels") or {})
        pod["metadata"]["resourceVersion"] = self.next_rv()
        return web.json_response(pod)

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
        lines = list(enumerate(self.pod_logs.get(name, [])))
        if "tailLines" in rec.query:
            lines = lines[len(lines) - min(len(lines), int(rec.query["tailLines"])):]
        for i, line in lines:
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
