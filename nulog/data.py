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

import numpy as np
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


@dataclass
class Corpus:
    """Lines as one flat id tensor; padded batches are cut from it on demand, on the device that holds it.

    Memory follows the number of tokens, not lines x longest line, and a batch is gathered with tensor ops,
    so on CUDA nothing crosses to the host while training.
    """

    flat: torch.Tensor  # (sum of lengths,) long: <CLS> then the ids of each line
    targets: torch.Tensor  # (sum of lengths,) long: the id to predict, -1 where nothing is predicted
    offsets: torch.Tensor  # (N + 1,) long: line r is flat[offsets[r]:offsets[r + 1]]
    lengths: np.ndarray  # (N,) on the host, to plan batches without asking the device

    @classmethod
    def build(cls, token_lists: list[list[str]], vocab: Vocab, *, max_len: int) -> Corpus:
        """Encode token lists, each cut to max_len positions."""
        flat: list[int] = []
        targets: list[int] = []
        offsets = [0]
        for tokens in token_lists:
            tokens = tokens[: max_len - 1]
            ids = vocab.encode(tokens)
            flat.append(CLS_ID)
            flat.extend(ids)
            targets.append(-1)
            targets.extend(i if t else -1 for i, t in zip(ids, target_positions(tokens), strict=True))
            offsets.append(len(flat))
        off = np.asarray(offsets, np.int64)
        return cls(
            flat=torch.tensor(flat, dtype=torch.long),
            targets=torch.tensor(targets, dtype=torch.long),
            offsets=torch.from_numpy(off),
            lengths=np.diff(off),
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def to(self, device: torch.device | str) -> Corpus:
        return Corpus(self.flat.to(device), self.targets.to(device), self.offsets.to(device), self.lengths)

    @property
    def target_counts(self) -> np.ndarray:
        """(N,) how many positions of each line the model predicts."""
        hit = (self.targets >= 0).cpu().numpy().astype(np.int64)
        return np.add.reduceat(hit, self.offsets[:-1].cpu().numpy())  # every line has <CLS>: no empty segment

    def batch(self, rows: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) padded with `<PAD>`, targets (B, T) padded with -1; rows (B,) on the corpus' device and
        T, the longest of those lines, from the host."""
        starts = self.offsets[rows]  # (B,)
        lens = self.offsets[rows + 1] - starts  # (B,)
        col = torch.arange(T, device=rows.device)  # (T,)
        valid = col[None, :] < lens[:, None]  # (B, T)
        pos = torch.where(valid, starts[:, None] + col[None, :], 0)  # (B, T)
        ids = torch.where(valid, self.flat[pos], PAD_ID)
        targets = torch.where(valid, self.targets[pos], -1)
        return ids, targets


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
