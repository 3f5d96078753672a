"""What the follower's messages tell, in the port's words: trainer output, worker states, and how it ended.

The event loop's side of following: it keeps what the end needs (the last error each master pod wrote, the
state last reported for each pod) and words a failure so that it names the worker that failed, and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nulog.protocol import ErrorEvent
from training_controller.adapters.launchers.kubernetes import pods as pod_status
from training_controller.adapters.launchers.kubernetes.pods import WorkerOf
from training_controller.adapters.launchers.output import parse_line
from training_controller.core.ports import LogLine, TrainerOutput, WorkerState

# How many lines of a failed worker's log are read to find its last word.
TAIL_LINES = 50


class Story:
    """The state of one followed training that outlives its messages."""

    def __init__(self, worker_of: WorkerOf, container: str) -> None:
        self.worker_of = worker_of
        self.container = container
        self._reported: dict[str, str] = {}  # pod name -> the state last reported for it
        self._last_words: dict[str, str] = {}  # pod name -> its last error event, else its last log line
        self._errors: set[str] = set()  # pods whose last word is an error event
        self.last_master_words = ""

    def line(self, pod: str, line: str) -> TrainerOutput | LogLine:
        """A line of a master's log as the port's event, remembering the last error in it."""
        event = parse_line(line)
        if isinstance(event, TrainerOutput) and isinstance(event.event, ErrorEvent):
            self._remember(pod, event.event.message, error=True)
        elif isinstance(event, LogLine) and event.line and pod not in self._errors:
            self._remember(pod, event.line, error=False)
        return event

    def _remember(self, pod: str, words: str, *, error: bool) -> None:
        self._last_words[pod] = words
        self.last_master_words = words
        if error:
            self._errors.add(pod)

    def changes(self, pods: Iterable[Mapping[str, Any]]) -> list[WorkerState]:
        """A WorkerState for each pod whose state differs from the one last reported, by rank."""
        out = []
        for pod in pods:
            worker = self.worker_of(pod)
            state = pod_status.state(pod)
            if self._reported.get(worker.name) == state:
                continue
            self._reported[worker.name] = state
            message = pod_status.detail(pod, self.container) if state != "running" else ""
            out.append(WorkerState(worker.index, worker.role, worker.name, state, message))
        return sorted(out, key=lambda w: (w.index, w.name))

    def words_of(self, pod: str) -> str:
        """What a followed pod said last: its last error event, else its last log line."""
        return self._last_words.get(pod, "")

    def failure(self, message: str, pods: Iterable[Mapping[str, Any]], tail: Mapping[str, list[str]]) -> str:
        """The message of a failed training: the object's reason, then which worker failed, how and its last words.

        `tail` holds the last lines of the logs of pods that were not followed (workers), by pod name.
        """
        culprit = pod_status.first_failed(pods, message, self.container)
        if culprit is None:
            return f"{message}; last log line: {self.last_master_words}" if self.last_master_words else message
        worker = self.worker_of(culprit)
        text = f"{message}; pod {worker.name} (index {worker.index}, {worker.role}) failed"
        why = pod_status.detail(culprit, self.container)
        if why:
            text += f": {why}"
        words = self.words_of(worker.name) or last_words(tail.get(worker.name, []))
        return f"{text}; last log line: {words}" if words else text

    def culprit(self, message: str, pods: Iterable[Mapping[str, Any]]) -> str | None:
        """The name of the pod whose last words must be read from its log, if its log was not followed."""
        pod = pod_status.first_failed(pods, message, self.container)
        if pod is None:
            return None
        name = self.worker_of(pod).name
        return None if self.words_of(name) else name


def last_words(lines: Iterable[str]) -> str:
    """The last error event among log lines, else the last line that is not an event."""
    error = line_words = ""
    for raw in lines:
        event = parse_line(raw)
        if isinstance(event, TrainerOutput) and isinstance(event.event, ErrorEvent):
            error = event.event.message
        elif isinstance(event, LogLine) and event.line:
            line_words = event.line
    return error or line_words
