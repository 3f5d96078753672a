"""Anomaly scores: the share of a line's predictable tokens that the model has within its top k.

The same predictions that drive template extraction; a line the model has seen the like of scores near 1,
a line with unseen words or words in unusual places scores low.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nulog.data import tokenize_unique
from nulog.model import NuLog
from nulog.parse import merge_templates
from nulog.predict import score_of, template_parts, token_hits
from nulog.tokenizer import Tokenizer, Vocab


@dataclass(frozen=True)
class LineScore:
    """Score, label and template of one line."""

    log: str
    score: float
    label: str  # "Anomaly" below the threshold, else "Normal"
    template: str


def score_lines(
    model: NuLog,
    vocab: Vocab,
    lines: Sequence[str],
    *,
    k: int | None = None,
    threshold: float | None = None,
) -> list[LineScore]:
    """Score every line, in order."""
    config = model.config
    k = k or config.k
    threshold = config.threshold if threshold is None else threshold
    unique, token_lists, where = tokenize_unique(list(lines), Tokenizer(config.filters))
    hits = token_hits(model, vocab, token_lists, k=k)
    parts = merge_templates([template_parts(t, h) for t, h in zip(token_lists, hits, strict=True)])
    per_unique = []
    for line, h, p in zip(unique, hits, parts, strict=True):
        s = score_of(h)
        per_unique.append(LineScore(line, s, "Anomaly" if s < threshold else "Normal", "".join(p)))
    return [per_unique[i] for i in where]
