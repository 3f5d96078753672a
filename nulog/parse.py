"""Template extraction: a token the model predicts within its top k and that holds no digit is part of
the template, any other becomes `<*>`. Also the LogHub-style `parse` of a raw log file into a CSV.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from nulog.data import tokenize_unique
from nulog.model import NuLog
from nulog.predict import WILDCARD, template_parts, token_hits
from nulog.tokenizer import Tokenizer, Vocab


def templates(
    model: NuLog, vocab: Vocab, lines: Sequence[str], *, k: int | None = None, merge: bool = True
) -> list[str]:
    """One template per line, in order; identical lines are predicted once.

    merge=True also unifies templates that differ only where one of them already has `<*>` (see
    `merge_templates`); merge=False gives NuLog's per-line rule alone.
    """
    config = model.config
    unique, token_lists, where = tokenize_unique(list(lines), Tokenizer(config.filters))
    hits = token_hits(model, vocab, token_lists, k=k or config.k)
    parts = [template_parts(t, h) for t, h in zip(token_lists, hits, strict=True)]
    if merge:
        parts = merge_templates(parts)
    unique_templates = ["".join(p) for p in parts]
    return [unique_templates[i] for i in where]


def _compatible(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Same length, and wherever they differ one of them is `<*>`; the shared constants outweigh the
    differences, so two mostly-variable templates are never joined."""
    if len(a) != len(b) or a == b:
        return False
    agree = differ = 0
    for x, y in zip(a, b, strict=True):
        if x == y:
            if x != WILDCARD and not x.isspace():
                agree += 1
        elif x == WILDCARD or y == WILDCARD:
            differ += 1
        else:
            return False
    return agree >= 1 and differ <= agree


def _join(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(x if x == y else WILDCARD for x, y in zip(a, b, strict=True))


def merge_templates(parts: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Unify templates that differ only where one of them has `<*>`.

    The model decides per line; a slot whose values repeat (a path seen five times) can be predicted in
    some lines and not in others, which splits one event into several templates. A slot that is `<*>` in
    one line and a constant in an otherwise identical line is a variable in both.
    """
    forward: dict[tuple[str, ...], tuple[str, ...]] = {}  # a template -> the more general one it joined
    by_len: dict[int, list[tuple[str, ...]]] = {}  # the current most general templates, by length
    for p in dict.fromkeys(parts):
        reps = by_len.setdefault(len(p), [])
        t = p
        while t not in reps:
            for i, r in enumerate(reps):
                if _compatible(r, t):
                    joined = _join(r, t)
                    del reps[i]
                    for old in (r, t):
                        if old != joined:
                            forward[old] = joined
                    t = joined  # the join may now match another template: go round again
                    break
            else:
                reps.append(t)

    def resolve(p: tuple[str, ...]) -> tuple[str, ...]:
        while p in forward:
            p = forward[p]
        return p

    return [resolve(p) for p in parts]


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
