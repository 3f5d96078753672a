"""The cluster launchers' shared life of a training, and the `kubernetes` launcher (batch/v1 Jobs).

The object that holds a training (Job, PyTorchJob), not the controller's memory, is the truth about what runs:
a restarted controller finds its trainings by label, and one that exists already when it is launched again
counts as launched. Its pods run the same entrypoint as the local launcher, so their logs carry the same JSON
progress lines; the master's log (rank 0) is followed, a failed worker's log is read for its last words.

Cancelling deletes the object (its pods and Service go with it) and returns only once no pod of the training
is Pending or Running, or raises LauncherUnavailable when that takes longer than KUBE_CANCEL_TIMEOUT_SECONDS
(the runner tries again).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from kubernetes import client, config

from nulog.objectstore import MinioConfig
from training_controller.adapters.launchers.kubernetes import manifest
from training_controller.adapters.launchers.kubernetes import pods as pod_status
from training_controller.adapters.launchers.kubernetes.api import JOBS, Kind, KubeApi
from training_controller.adapters.launchers.kubernetes.errors import ApiCall, api_errors
from training_controller.adapters.launchers.kubernetes.follower import (
    Follower,
    FollowFailed,
    LogsDone,
    Message,
    ObjectGone,
    ObjectSeen,
    PodLine,
    PodsSeen,
    Target,
)
from training_controller.adapters.launchers.kubernetes.story import TAIL_LINES, Story
from training_controller.config import KubernetesSettings
from training_controller.core import ports
from training_controller.core.errors import ControllerError, LauncherUnavailable

log = logging.getLogger(__name__)


def job_state(job: Mapping[str, Any]) -> tuple[str, str]:
    """("running"|"succeeded"|"failed", message) of a batch/v1 Job as the API returns it (JSON)."""
    status = job.get("status") or {}
    true = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in true:
        return "succeeded", "the Job completed"
    if "Failed" in true:
        cond = true["Failed"]
        reason, message = cond.get("reason") or "Failed", cond.get("message") or ""
        return "failed", f"{reason}: {message}" if message else reason
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return "failed", "the Job is being deleted"
    return "running", f"{status.get('active') or 0} pod(s) active, {status.get('failed') or 0} failed"


class ClusterLauncher(ports.Launcher):
    """Trainings as objects in a Kubernetes namespace: what the Job and the PyTorchJob launchers share."""

    kind: Kind = JOBS
    container = manifest.CONTAINER
    hint_404 = ""  # what a 404 on the training's object means, beyond "not found"

    def __init__(
        self,
        api_client: client.ApiClient,
        settings: KubernetesSettings,
        *,
        minio: MinioConfig | None = None,
        still_running_seconds: float = ports.STILL_RUNNING_SECONDS,
    ) -> None:
        if not settings.image_name:
            raise ValueError(f"the {self.name} launcher needs the training image (NULOG_TRAIN_IMAGE_NAME)")
        self.minio = minio or MinioConfig()
        manifest.check_ca_source(settings, self.minio)
        self.api_client = api_client
        self.settings = settings
        self.namespace = settings.namespace
        self.image = settings.image
        self.still_running_seconds = still_running_seconds
        self.api = KubeApi(api_client, settings.namespace, request_timeout=settings.request_timeout_seconds)

    @classmethod
    def from_environment(cls, settings: KubernetesSettings, *, minio: MinioConfig | None = None) -> ClusterLauncher:
        """A launcher with the in-cluster service account, or else the kubeconfig (`KUBECONFIG`, ~/.kube/config)."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            try:
                # KUBECONFIG as it is now (the client reads it once, at import); it may list several files.
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
            except (config.ConfigException, OSError) as e:
                raise LauncherUnavailable(f"no Kubernetes configuration: not in a cluster and no kubeconfig ({e})") from e
        return cls(client.ApiClient(configuration), settings, minio=minio)

    # -- what each kind of launcher says ---------------------------------------------------------------

    def build(self, spec: ports.JobSpec) -> dict[str, Any]:
        """The body of the object that holds the training."""
        raise NotImplementedError

    def state_of(self, obj: Mapping[str, Any]) -> tuple[str, str]:
        """("running"|"succeeded"|"failed", message) of the training's object."""
        raise NotImplementedError

    def target(self, job_id: str) -> Target:
        """What a follower of the training follows."""
        raise NotImplementedError

    async def created(self, spec: ports.JobSpec, obj: dict[str, Any] | None) -> None:  # noqa: B027 - most need nothing more
        """After the object was created (`obj`), or found to exist already (None): create what goes with it."""

    def _errors(self, verb: str, *, job_id: str | None = None, tolerate: tuple[int, ...] = ()):
        return api_errors(
            verb, self.kind.plural, namespace=self.namespace, group=self.kind.group, job_id=job_id, tolerate=tolerate,
            hint=self.hint_404,
        )

    # -- the port --------------------------------------------------------------------------------------

    async def launch(self, spec: ports.JobSpec) -> None:
        body = self.build(spec)  # an id that cannot name the objects is refused before any request
        name = body["metadata"]["name"]
        obj: dict[str, Any] | None = None
        with self._errors("create", job_id=spec.job_id, tolerate=(409,)) as call:
            obj = await asyncio.to_thread(self.api.create, self.kind, body)
        if call.tolerated:
            log.info("job %s: %s %s exists already in %s; treating it as launched", spec.job_id, self.kind.kind, name, self.namespace)
        else:
            log.info(
                "job %s: created %s %s in %s (image %s, %d worker(s))",
                spec.job_id, self.kind.kind, name, self.namespace, spec.image or self.image, spec.workers,
            )
        await self.created(spec, obj)

    async def events(self, job_id: str) -> AsyncIterator[ports.LauncherEvent]:
        loop = asyncio.get_running_loop()
        target = self.target(job_id)
        follower = Follower(self.api, self.settings, target, loop)
        story = Story(target.worker_of, target.container)
        interval = self.still_running_seconds
        outcome: tuple[str, str] | None = None
        logs_done = False
        follower.start()
        try:
            quiet_until = loop.time() + interval
            while outcome is None:
                try:
                    message: Message = await asyncio.wait_for(follower.queue.get(), max(0.0, quiet_until - loop.time()))
                except TimeoutError:
                    if follower.in_contact(interval):  # not while the API is out of reach: nothing is known then
                        yield ports.StillRunning()
                    quiet_until = loop.time() + interval
                    continue
                told: list[ports.LauncherEvent] = []
                match message:
                    case PodLine(pod=pod, line=line):
                        told.append(story.line(pod, line))
                    case PodsSeen(pods=pods):
                        told += story.changes(pods)
                    case ObjectSeen(obj=obj):
                        state, words = self.state_of(obj)
                        outcome = None if state == "running" else (state, words)
                    case ObjectGone(message=words):
                        outcome = ("failed", words)
                    case FollowFailed(error=error):
                        raise error
                    case LogsDone():
                        logs_done = True
                for event in told:
                    yield event
                if told:
                    quiet_until = loop.time() + interval
            # The object has ended: the master's log may still hold lines the log thread has not passed on.
            follower.job_ended.set()
            if not logs_done:
                async for pod, line in self._drain(follower):
                    yield story.line(pod, line)
            state, words = outcome
            pods = await self._pods_at_the_end(job_id)
            for event in story.changes(pods):
                yield event
            if state == "succeeded":
                log.info("job %s: %s %s succeeded", job_id, self.kind.kind, target.name)
                yield ports.Finished(succeeded=True, message=words)
                return
            culprit = story.culprit(words, pods)
            tail = {culprit: await self._log_tail(job_id, culprit)} if culprit else {}
            words = story.failure(words, pods, tail)
            log.info("job %s: %s %s failed: %s", job_id, self.kind.kind, target.name, words)
            yield ports.Finished(succeeded=False, message=words)
        finally:
            follower.stop()

    async def _drain(self, follower: Follower) -> AsyncIterator[tuple[str, str]]:
        """The master's log lines still to come, until the log thread is done or log_drain_seconds have passed."""
        loop = follower.loop
        deadline = loop.time() + self.settings.log_drain_seconds
        while True:
            try:
                message = await asyncio.wait_for(follower.queue.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                log.warning(
                    "job %s: the log did not end within %.0fs of the %s; not waiting longer",
                    follower.target.job_id, self.settings.log_drain_seconds, self.kind.kind,
                )
                return
            if isinstance(message, PodLine):
                yield message.pod, message.line
            elif isinstance(message, LogsDone):
                return

    async def _pods_at_the_end(self, job_id: str) -> list[dict[str, Any]]:
        try:
            with api_errors("list", "pods", namespace=self.namespace, job_id=job_id):
                return await asyncio.to_thread(self.api.pods_of, job_id)
        except ControllerError as e:  # the outcome is known; only the workers' last states are not
            log.warning("job %s: cannot list the pods at the end: %s", job_id, e)
            return []

    async def _log_tail(self, job_id: str, pod: str) -> list[str]:
        try:
            with api_errors("get", "pods/log", namespace=self.namespace, job_id=job_id):
                return await asyncio.to_thread(self.api.log_tail, pod, self.container, lines=TAIL_LINES)
        except ControllerError as e:  # the failure is still reported, without the worker's last words
            log.warning("job %s: cannot read the log of pod %s: %s", job_id, pod, e)
            return []

    async def cancel(self, job_id: str) -> None:
        name = manifest.job_name(job_id)
        with self._errors("delete", job_id=job_id, tolerate=(404,)) as call:
            await asyncio.to_thread(self.api.delete, self.kind, name)
        if call.tolerated:
            log.info("job %s: %s %s does not exist; waiting for pods left of it", job_id, self.kind.kind, name)
        else:
            log.info("job %s: deleted %s %s; waiting for its pods to stop", job_id, self.kind.kind, name)
        await self._wait_until_stopped(job_id)

    async def _wait_until_stopped(self, job_id: str) -> None:
        """Return once no pod of the training is Pending or Running; LauncherUnavailable after the timeout."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.cancel_timeout_seconds
        deadline = loop.time() + timeout
        while True:
            with api_errors("list", "pods", namespace=self.namespace, job_id=job_id):
                pods = await asyncio.to_thread(self.api.pods_of, job_id)
            live = [p["metadata"]["name"] for p in pods if pod_status.phase(p) in ("Pending", "Running")]
            if not live:
                log.info("job %s: no pod of it runs any more", job_id)
                return
            if loop.time() >= deadline:
                raise LauncherUnavailable(
                    f"job {job_id}: pod(s) {', '.join(live)} still run {timeout:.0f}s after the {self.kind.kind} was "
                    "deleted; the trainer may still run"
                )
            await asyncio.sleep(self.settings.poll_seconds)

    async def list_jobs(self) -> list[ports.LaunchedJob]:
        selector = f"{manifest.APP_LABEL}={manifest.APP_NAME}"
        with self._errors("list"):
            objects = await asyncio.to_thread(self.api.list_all, self.kind, label_selector=selector)
        launched = []
        for obj in objects:
            meta = obj.get("metadata") or {}
            job_id = (meta.get("labels") or {}).get(manifest.JOB_ID_LABEL) or str(meta.get("name", "")).removeprefix(manifest.JOB_PREFIX)
            launched.append(ports.LaunchedJob(job_id, *self.state_of(obj)))
        return launched

    async def ping(self) -> bool:
        selector = f"{manifest.APP_LABEL}={manifest.APP_NAME}"
        try:
            with self._errors("list"):
                await asyncio.to_thread(self.api.json, self.api.lister(self.kind), label_selector=selector, limit=1)
        except ControllerError as e:
            log.warning("%s launcher unhealthy: %s", self.name, e)
            return False
        return True


class KubernetesLauncher(ClusterLauncher):
    """Trainings as batch/v1 Jobs: one pod, or an Indexed Job with a headless Service for several workers."""

    name = "kubernetes"

    def build(self, spec: ports.JobSpec) -> dict[str, Any]:
        return manifest.job_manifest(spec, self.settings, self.minio)

    def state_of(self, obj: Mapping[str, Any]) -> tuple[str, str]:
        return job_state(obj)

    def target(self, job_id: str) -> Target:
        # Pods of an Indexed Job share one template: their role labels are put on by the follower.
        return Target(job_id, manifest.job_name(job_id), JOBS, manifest.CONTAINER, pod_status.indexed_worker, label_roles=True)

    async def created(self, spec: ports.JobSpec, obj: dict[str, Any] | None) -> None:
        """For several workers, the headless Service of the rendezvous, owned by the Job."""
        if spec.workers == 1:
            return
        if obj is None:  # the Job existed already (a launch again after a restart): its Service may not
            with self._errors("get", job_id=spec.job_id):
                obj = await asyncio.to_thread(self.api.get, JOBS, manifest.job_name(spec.job_id))
        body = manifest.service_manifest(spec, self.settings, owner_uid=obj["metadata"]["uid"])
        call: ApiCall
        with api_errors("create", "services", namespace=self.namespace, job_id=spec.job_id, tolerate=(409,)) as call:
            await asyncio.to_thread(self.api.create_service, body)
        if not call.tolerated:
            log.info("job %s: created the headless Service %s for %d workers", spec.job_id, body["metadata"]["name"], spec.workers)
