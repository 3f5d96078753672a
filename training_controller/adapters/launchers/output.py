"""Reading a trainer's stdout: each line is a trainer-contract event (`nulog.protocol`) or a log line."""

from __future__ import annotations

import logging

from nulog.protocol import ProtocolError, parse_event
from training_controller.core.ports import LogLine, TrainerOutput

log = logging.getLogger(__name__)


def parse_line(raw: bytes | str) -> TrainerOutput | LogLine:
    """A line of a training job's stdout: a trainer-contract event, or a log line.

    A line that claims to be an event and breaks the contract is passed on as a log line, with a warning:
    the two sides disagree, and that is for an operator to see.
    """
    try:
        event = parse_event(raw)
    except ProtocolError as e:
        log.warning("%s", e)
        event = None
    if event is not None:
        return TrainerOutput(event)
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return LogLine(text.strip())
