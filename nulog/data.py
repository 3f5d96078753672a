"""Reading log lines from the inputs NuLog accepts, and turning token lists into padded id tensors.

The controller exports windows (`{"logs": [...]}` per JSON line, gzipped), the `nulog` command also takes
JSONL with a `log` field or plain text; the shape is detected per line so mixed files work too.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from nulog.tokenizer import CLS_ID, PAD_ID, Tokenizer, Vocab, is_blank, is_variable


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


def target_positions(tokens: list[str]) -> list[bool]:
    """Which tokens the model predicts: digit-free, non-placeholder, non-blank ones."""
    return [not is_variable(t) and not is_blank(t) for t in tokens]


@dataclass
class Encoded:
    """Lines as padded id tensors: `<CLS>` at 0, ids, `<PAD>` after the end."""

    ids: torch.Tensor  # (N, T) long
    targets: torch.Tensor  # (N, T) bool: positions the model predicts
    lengths: torch.Tensor  # (N,) long, <CLS> included


def encode(token_lists: list[list[str]], vocab: Vocab, *, max_len: int) -> Encoded:
    """Encode token lists, cutting each to max_len positions (the cut tail is never predicted)."""
    n = len(token_lists)
    T = max([min(len(t) + 1, max_len) for t in token_lists], default=1)
    ids = torch.full((n, T), PAD_ID, dtype=torch.long)
    targets = torch.zeros((n, T), dtype=torch.bool)
    lengths = torch.empty(n, dtype=torch.long)
    for r, tokens in enumerate(token_lists):
        tokens = tokens[: max_len - 1]
        L = len(tokens) + 1
        ids[r, 0] = CLS_ID
        if tokens:
            ids[r, 1:L] = torch.tensor(vocab.encode(tokens), dtype=torch.long)
            targets[r, 1:L] = torch.tensor(target_positions(tokens), dtype=torch.bool)
        lengths[r] = L
    return Encoded(ids=ids, targets=targets, lengths=lengths)


def tokenize_unique(lines: list[str], tokenizer: Tokenizer) -> tuple[list[str], list[list[str]], list[int]]:
    """Unique lines in first-seen order, their tokens, and for every input line its unique index."""
    index: dict[str, int] = {}
    where: list[int] = []
    for line in lines:
        i = index.get(line)
        if i is None:
            i = index[line] = len(index)
        where.append(i)
    unique = list(index)
    return unique, [tokenizer.tokenize(u) for u in unique], where
