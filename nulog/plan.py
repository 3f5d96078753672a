"""What a training steps through: the distinct id sequences as one flat corpus, and the plan of steps.

A step draws `batch_size` sequences by how many lines each stands for (`TrainConfig.weighting`) and trains on
the distinct ones among them, each weighted by how often it was drawn, padded only to the longest of them.
The whole plan is drawn from the seed up front, so a resumed run, and every rank of one training, takes the
same steps. An epoch has as many steps as a pass over the distinct sequences; a corpus of few of them still
gets `min_steps`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nulog.config import TrainConfig
from nulog.encoder import Key, LineEncoder
from nulog.opni_encoder import OpniEncoder
from nulog.tokenizer import CLS_ID, PAD_ID


@dataclass
class Corpus:
    """Distinct id sequences as one flat tensor; padded batches are cut from it on the device that holds it.

    Memory follows the number of tokens, not sequences x longest one, and a batch is gathered with tensor
    ops, so on CUDA nothing crosses to the host while training.
    """

    flat: torch.Tensor  # (sum of lengths,) long: <CLS> then the ids of each sequence
    targets: torch.Tensor  # (sum of lengths,) long: the id to predict, -1 where nothing is predicted
    offsets: torch.Tensor  # (N + 1,) long: sequence r is flat[offsets[r]:offsets[r + 1]]
    lengths: np.ndarray  # (N,) on the host, to plan batches without asking the device
    predicted: np.ndarray  # (N,) on the host: predictions per sequence

    @classmethod
    def build(cls, keys: Sequence[Key], encoder: LineEncoder | OpniEncoder, *, max_len: int) -> Corpus:
        """The model's input of each sequence (see `LineEncoder.model_input`), <CLS> first."""
        inputs = [encoder.model_input(k, max_len)[0] for k in keys]
        lengths = np.array([len(a) + 1 for a in inputs], dtype=np.int64)
        off = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.empty(int(off[-1]), dtype=np.int64)
        for r, a in enumerate(inputs):
            flat[off[r]] = CLS_ID
            flat[off[r] + 1 : off[r + 1]] = a
        hit = encoder.targets[flat]
        flat_t = torch.from_numpy(flat)
        return cls(
            flat=flat_t,
            targets=torch.where(torch.from_numpy(hit), flat_t, -1),
            offsets=torch.from_numpy(off),
            lengths=lengths,
            predicted=np.add.reduceat(hit.astype(np.int64), off[:-1]),  # every sequence has <CLS>: no empty one
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def to(self, device: torch.device | str) -> Corpus:
        return Corpus(self.flat.to(device), self.targets.to(device), self.offsets.to(device), self.lengths,
                      self.predicted)

    def batch(self, rows: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) padded with `<PAD>`, targets (B, T) padded with -1; rows (B,) on the corpus' device and
        T, the longest of those sequences, from the host."""
        starts = self.offsets[rows]  # (B,)
        lens = self.offsets[rows + 1] - starts  # (B,)
        col = torch.arange(T, device=rows.device)  # (T,)
        valid = col[None, :] < lens[:, None]  # (B, T)
        pos = torch.where(valid, starts[:, None] + col[None, :], 0)  # (B, T)
        ids = torch.where(valid, self.flat[pos], PAD_ID)
        targets = torch.where(valid, self.targets[pos], -1)
        return ids, targets


def draw_probabilities(counts: np.ndarray, weighting: str) -> np.ndarray:
    """(N,) how likely a draw picks each distinct sequence, from how many lines it stands for: "lines" draws
    as if from the lines themselves."""
    counts = counts.astype(np.float64)
    w = counts if weighting == "lines" else np.sqrt(counts) if weighting == "sqrt" else np.ones_like(counts)
    return w / w.sum()


# Attention entries (B * H * T * T) one forward pass may hold; a step over longer lines is cut in parts.
ATTENTION_PER_PASS = 1 << 25


@dataclass
class Plan:
    """Every step's distinct sequences and their loss weights, drawn from the seed up front (so a resumed run
    takes the same ones), as flat arrays: step s is rows[starts[s]:starts[s + 1]]."""

    rows: np.ndarray  # (R,) int64: corpus rows
    weights: np.ndarray  # (R,) float32: weight of each prediction of that row in its step's loss
    starts: np.ndarray  # (S + 1,) int64
    steps_per_epoch: int

    @classmethod
    def draw(cls, corpus: Corpus, p: np.ndarray, config: TrainConfig) -> Plan:
        """Each step draws `batch_size` sequences with probabilities p and trains on the distinct ones, each
        weighted by how often it was drawn: the loss is the mean loss of the predictions of the drawn lines.
        An epoch has as many steps as a pass over the distinct sequences needs, and `min_steps` are taken."""
        rng = np.random.default_rng(config.seed)
        per_epoch = max(math.ceil(len(corpus) / config.batch_size), math.ceil(config.min_steps / config.epochs))
        rows, weights, starts = [], [], [0]
        for _ in range(per_epoch * config.epochs):
            r, n = np.unique(rng.choice(len(corpus), size=config.batch_size, p=p), return_counts=True)
            predictions = float((n * corpus.predicted[r]).sum())
            rows.append(r)
            weights.append(n / max(predictions, 1.0))
            starts.append(starts[-1] + len(r))
        return cls(np.concatenate(rows), np.concatenate(weights).astype(np.float32), np.array(starts),
                   per_epoch)

    @property
    def steps(self) -> int:
        return len(self.starts) - 1


def forward_parts(rows: np.ndarray, lengths: np.ndarray, n_heads: int) -> list[np.ndarray]:
    """Positions (into rows) of the forward passes of one step: all at once, or by length when their
    attention matrices would hold more than ATTENTION_PER_PASS entries."""
    T = int(lengths[rows].max())
    if len(rows) * n_heads * T * T <= ATTENTION_PER_PASS:
        return [np.arange(len(rows))]
    order = np.argsort(lengths[rows], kind="stable")
    parts, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * n_heads * int(lengths[rows[i]]) ** 2 > ATTENTION_PER_PASS:
            parts.append(np.array(cur))
            cur = []
        cur.append(i)
    return parts + [np.array(cur)]
