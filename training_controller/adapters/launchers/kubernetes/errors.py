"""How the Kubernetes API's answers become the core's errors, in one place.

    403, 401                        LauncherForbidden: names the RBAC rule the controller's Role lacks
    400, 404, 405, 413, 415, 422    LauncherRejected: the same request will be refused again
    5xx, 429, any other status      LauncherUnavailable: retry later
    connection errors, timeouts     LauncherUnavailable: retry later

Every call to the API goes through `api_errors`, in the event loop's threads and in the follower's alike; a
caller that expects a status (409 AlreadyExists on a create, 404 on a delete) tolerates it by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import urllib3
from kubernetes.client.exceptions import ApiException

from training_controller.core.errors import (
    ControllerError,
    LauncherForbidden,
    LauncherRejected,
    LauncherUnavailable,
)

_REJECTED = (400, 404, 405, 413, 415, 422)


@dataclass
class ApiCall:
    """One kind of request: `verb` on `resource` of API `group` in `namespace`, for a job or for none."""

    verb: str
    resource: str
    namespace: str
    group: str = ""
    job_id: str | None = None
    hint: str = ""  # added to a 404, e.g. that a custom resource's operator is not installed
    tolerated: int | None = None  # the status that `api_errors` let pass, if one did

    @property
    def what(self) -> str:
        return f"{self.verb} {self.resource}{'.' + self.group if self.group else ''} in namespace {self.namespace}"

    def error(self, e: ApiException) -> ControllerError:
        """The core's error for an API error answer to this request."""
        who = f"job {self.job_id}: " if self.job_id else ""
        detail = status_message(e)
        if e.status == 403:
            return LauncherForbidden(
                f"{who}the Kubernetes API refused to {self.what} (403 Forbidden: {detail}); the controller's service "
                f"account needs a Role in namespace {self.namespace} with the rule "
                f'apiGroups: ["{self.group}"], resources: ["{self.resource}"], verbs: ["{self.verb}"] (see rbac.yaml)'
            )
        if e.status == 401:
            return LauncherForbidden(f"{who}the Kubernetes API rejected the controller's credentials to {self.what} (401)")
        if e.status in _REJECTED:
            hint = f"; {self.hint}" if self.hint and e.status == 404 else ""
            return LauncherRejected(f"{who}the Kubernetes API rejected the request to {self.what} ({e.status}: {detail}){hint}")
        return LauncherUnavailable(f"{who}the Kubernetes API could not {self.what} ({e.status}: {detail})")

    def unreachable(self, e: BaseException) -> LauncherUnavailable:
        who = f"job {self.job_id}: " if self.job_id else ""
        return LauncherUnavailable(f"{who}cannot reach the Kubernetes API to {self.what}: {short(e)}")


@contextmanager
def api_errors(
    verb: str,
    resource: str,
    *,
    namespace: str,
    group: str = "",
    job_id: str | None = None,
    tolerate: tuple[int, ...] = (),
    hint: str = "",
) -> Iterator[ApiCall]:
    """Run API calls, raising the core's error for what goes wrong; a tolerated status ends the block quietly."""
    call = ApiCall(verb, resource, namespace, group, job_id, hint)
    try:
        yield call
    except ApiException as e:
        if e.status in tolerate:
            call.tolerated = e.status
            return
        raise call.error(e) from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise call.unreachable(e) from e
    except ValueError as e:  # a body that is not the JSON the API server sends: a proxy in between, or a cut stream
        raise LauncherUnavailable(f"the Kubernetes API's answer to {call.what} could not be read: {e}") from e


def status_message(e: ApiException) -> str:
    """The `message` of the Status object the API server sent, or the HTTP reason."""
    try:
        body = json.loads(e.body) if e.body else {}
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or e.reason or "no details") if isinstance(body, dict) else str(e.reason)


def short(e: BaseException) -> str:
    """An error in a few words, for a log line."""
    if isinstance(e, ApiException):
        return f"{e.status} {status_message(e)}"
    return f"{type(e).__name__}: {e}"
