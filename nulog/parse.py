"""LogHub's side of `nulog parse`: log formats that split a raw line into fields, and the structured CSV
that LogHub's evaluator reads. Nothing here needs torch.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path


def event_id(template: str) -> str:
    """A stable id of a template (first 8 hex digits of its MD5, as logparser does)."""
    return hashlib.md5(template.encode("utf-8")).hexdigest()[:8]


def logformat_regex(log_format: str) -> tuple[list[str], re.Pattern[str]]:
    """Field names and the regex of a LogHub log format such as `<Date> <Time> <Level>: <Content>`."""
    headers: list[str] = []
    regex = ""
    for i, part in enumerate(re.split(r"(<[^<>]+>)", log_format)):
        if i % 2 == 0:
            regex += re.sub(" +", r"\\s+", part)
        else:
            header = part.strip("<>")
            regex += f"(?P<{header}>.*?)"
            headers.append(header)
    return headers, re.compile("^" + regex + "$")


def split_fields(lines: Sequence[str], log_format: str) -> tuple[list[str], list[dict[str, str]]]:
    """Each line's fields; a line that does not match keeps the whole line as `Content`."""
    headers, regex = logformat_regex(log_format)
    if "Content" not in headers:
        headers.append("Content")
    rows = []
    for line in lines:
        m = regex.search(line.strip())
        if m:
            rows.append(m.groupdict())
        else:
            row = dict.fromkeys(headers, "")
            row["Content"] = line
            rows.append(row)
    return headers, rows


def write_structured_csv(
    path: str | Path, headers: list[str], rows: list[dict[str, str]], line_templates: list[str]
) -> None:
    """LogHub's structured CSV: LineId, the format's fields, EventId, EventTemplate."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["LineId", *headers, "EventId", "EventTemplate"])
        for n, (row, template) in enumerate(zip(rows, line_templates, strict=True), start=1):
            w.writerow([n, *(row.get(h, "") for h in headers), event_id(template), template])


def read_raw_lines(path: str | Path) -> list[str]:
    """Every line of a log file, empty ones included, so the output keeps the file's line count."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]
