"""Errors of the controller, split by what the caller should do about them.

    ControllerError
    ├── TemporaryError            retry later, after `delay` seconds
    │   ├── SourceUnavailable     the log backend did not answer
    │   ├── StorageUnavailable    the object store did not answer
    │   ├── LauncherUnavailable   the launcher (Kubernetes API, local process table) did not answer
    │   ├── StateUnavailable      the state store (JetStream KV) did not answer: NATS down, paused, slow
    │   └── EventsUnavailable     an announcement could not be handed to NATS
    └── PermanentError            retrying will not help: fail the job with this message
        ├── InvalidRequest        the request itself is wrong (bad payload, unknown job)
        │   ├── SourceRejected    the log backend refused the query (credentials, index)
        │   └── Conflict          the request cannot be done in the state things are in now
        ├── StorageAccessDenied   the object store refused the credentials or the operation
        ├── StorageRejected       the object store says the operation cannot succeed
        ├── LauncherForbidden     the launcher may not do that (a missing RBAC rule, named)
        ├── LauncherRejected      the launcher's API rejected the job as invalid
        ├── NoTrainingData        the query matched no log documents
        ├── IllegalTransition     a job record was asked to move to a phase it cannot reach
        ├── JobNotFound           no record with that job id
        ├── TrainingFailed        the training job ended without a usable model
        └── DeadlineExceeded      a temporary failure outlasted the job's deadline

Adapters translate their clients' exceptions at the boundary (`raise StorageUnavailable(...) from e`), so the
core never sees an Elasticsearch, S3, Kubernetes or NATS exception. The job runner's policy follows the tree:
a TemporaryError is retried after its `delay` (with backoff) while the job's deadline allows, a
PermanentError fails the job with its message, and any other exception is a bug: it is logged with its
traceback and fails the job, never the worker.
"""

from __future__ import annotations


class ControllerError(Exception):
    """Base of every error the controller raises on purpose."""


class TemporaryError(ControllerError):
    """A failure that may pass: retry after `delay` seconds."""

    def __init__(self, message: str, *, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class SourceUnavailable(TemporaryError):
    """The log source did not answer."""


class StorageUnavailable(TemporaryError):
    """The object store did not answer."""


class LauncherUnavailable(TemporaryError):
    """The launcher could not be reached."""


class StateUnavailable(TemporaryError):
    """The state store did not take or give a value in time."""


class EventsUnavailable(TemporaryError):
    """An announcement could not be handed to the message bus."""


class PermanentError(ControllerError):
    """A failure that retrying will not fix."""


class InvalidRequest(PermanentError):
    """The request is wrong; the message says how."""


class Conflict(InvalidRequest):
    """The request is valid but clashes with the state things are in (a training holds the GPU, ...)."""


class SourceRejected(InvalidRequest):
    """The log backend refused the request (credentials, index, query); retrying will not help."""


class StorageAccessDenied(PermanentError):
    """The object store refused the credentials or the operation; retrying will not help."""


class StorageRejected(PermanentError):
    """The object store answered that the operation cannot succeed (bad name, bucket owned by someone else)."""


class LauncherForbidden(PermanentError):
    """The launcher's API refused a request for lack of permission; the message names the missing rule."""


class LauncherRejected(PermanentError):
    """The launcher's API rejected a request as invalid; retrying the same request will not help."""


class NoTrainingData(PermanentError):
    """The query matched no log documents."""


class IllegalTransition(PermanentError):
    """A job record was asked to move to a phase it cannot reach from where it is."""


class JobNotFound(PermanentError):
    """No job record has that id."""


class TrainingFailed(PermanentError):
    """The training job ended without a usable model."""


class DeadlineExceeded(PermanentError):
    """A step kept failing for a temporary reason until the job's deadline passed."""
