"""Which tokens of each line the model predicts within its top k: the shared step of parsing and scoring."""

from __future__ import annotations

import torch

from nulog.data import encode
from nulog.model import NuLog
from nulog.tokenizer import Vocab, is_blank, is_variable

# Lines per inference batch are capped by padded positions and by attention entries (B * H * T * T), so
# long lines do not blow up memory.
POSITIONS_PER_BATCH = 16384
ATTENTION_PER_BATCH = 1 << 25


def token_hits(
    model: NuLog, vocab: Vocab, token_lists: list[list[str]], *, k: int
) -> list[list[bool | None]]:
    """Per line, per token: True/False = predicted within top-k or not; None = not predicted.

    Blank and variable tokens are not predicted, nor tokens past the model's max_len.
    """
    device = next(model.parameters()).device
    max_len = model.config.max_len
    out: list[list[bool | None]] = [[None] * len(t) for t in token_lists]
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    start = 0
    was_training = model.training
    model.eval()
    try:
        while start < len(order):
            end = start + 1
            while end < len(order):
                T_next = min(len(token_lists[order[end]]) + 1, max_len)
                B = end - start + 1
                if B * T_next > POSITIONS_PER_BATCH or B * model.config.n_heads * T_next**2 > ATTENTION_PER_BATCH:
                    break
                end += 1
            rows = order[start:end]
            enc = encode([token_lists[i] for i in rows], vocab, max_len=max_len)
            idx, select = enc.ids.to(device), enc.targets.to(device)
            hits = model.topk_hits(idx, select, k).cpu()  # (P,)
            dense = torch.zeros(select.shape, dtype=torch.bool)
            dense[select.cpu()] = hits
            sel = enc.targets
            for r, i in enumerate(rows):
                line_hits = out[i]
                for j in range(min(len(token_lists[i]), max_len - 1)):
                    if sel[r, j + 1]:
                        line_hits[j] = bool(dense[r, j + 1])
            start = end
    finally:
        model.train(was_training)
    return out


WILDCARD = "<*>"


def template_parts(tokens: list[str], hits: list[bool | None]) -> tuple[str, ...]:
    """The tokens, with `<*>` for each variable or mispredicted one."""
    parts = []
    for t, h in zip(tokens, hits, strict=True):
        if is_blank(t):
            parts.append(t)
        elif is_variable(t) or h is False:
            parts.append(WILDCARD)
        else:
            parts.append(t)
    return tuple(parts)


def template_of(tokens: list[str], hits: list[bool | None]) -> str:
    """Join the tokens back, writing `<*>` for each variable or mispredicted one."""
    return "".join(template_parts(tokens, hits))


def score_of(hits: list[bool | None]) -> float:
    """Share of predicted tokens found within top-k; 1.0 for a line with nothing to predict."""
    judged = [h for h in hits if h is not None]
    return sum(judged) / len(judged) if judged else 1.0
