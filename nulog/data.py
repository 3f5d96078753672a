"""Reading log lines from the inputs NuLog accepts, as a stream.

The controller exports windows (`{"logs": [...]}` per JSON line, gzipped), the `nulog` command also takes
JSONL with a `log` field or plain text; the shape is detected per line so mixed files work too.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a text file, gunzipping by extension; `-` is stdin."""
    if str(path) == "-":
        return sys.stdin
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def lines_of(raw: str) -> list[str]:
    """The log lines one input line holds: a window's `logs`, a record's `log`, or the line itself."""
    if raw.startswith("{"):
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            if isinstance(obj.get("logs"), list):
                return [str(x) for x in obj["logs"]]
            if "log" in obj:
                return [str(obj["log"])]
    return [raw]


def read_lines(paths: Iterable[str | Path], *, skip_empty: bool = True) -> Iterator[str]:
    """Every log line of the given files, in order."""
    for path in paths:
        f = open_text(path)
        try:
            for raw in f:
                raw = raw.rstrip("\r\n")
                for line in lines_of(raw):
                    if skip_empty and not line.strip():
                        continue
                    yield line
        finally:
            if f is not sys.stdin:
                f.close()
