"""The one encoder of log lines, shared by training and prediction: a line becomes its id sequence.

What the model predicts for a line depends on its id sequence alone (digit-bearing variables share `<NUM>`,
unseen words `<UNK>`), so both training and prediction work once per distinct id sequence: many distinct
lines are one sequence. Nothing here needs torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from nulog.config import TrainConfig
from nulog.tokenizer import BLANK_ID, CLS_ID, PAD_ID, Tokenizer, Vocab

Key = tuple[int, ...]  # a line's id sequence, without <CLS>, not cut to the model's max_len


class LineEncoder:
    """A tokenizer and a vocabulary: lines to id sequences, and id sequences to padded model input."""

    def __init__(self, tokenizer: Tokenizer, vocab: Vocab) -> None:
        self.tokenizer = tokenizer
        self.vocab = vocab
        self._id = vocab.stoi.__getitem__

    @classmethod
    def fit(cls, distinct_lines: Iterable[str], config: TrainConfig) -> LineEncoder:
        """Build the vocabulary from distinct training lines."""
        tokenizer = Tokenizer(config.filters)
        token_lists = [tokenizer.tokenize(line) for line in distinct_lines]
        vocab = Vocab.build(token_lists, digit_min_lines=config.digit_min_lines,
                            digit_slot_share=config.digit_slot_share)
        return cls(tokenizer, vocab)

    @property
    def filters(self) -> str:
        return self.tokenizer.filters

    def key(self, line: str) -> Key:
        """The id sequence of a line."""
        return tuple(map(self._id, self.tokenizer.tokenize(line)))

    def count(self, per_line: Mapping[str, int]) -> Counter[Key]:
        """How many lines have each id sequence, in first-seen order, from how often each distinct line
        occurs."""
        counts: Counter[Key] = Counter()
        for line, n in per_line.items():
            counts[self.key(line)] += n
        return counts

    def pad(self, keys: Sequence[Key], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Model input for id sequences: ids (B, T) int64 with `<CLS>` at 0 and `<PAD>` after the end,
        each cut to max_len positions, and select (B, T) bool, the positions the model predicts."""
        lengths = np.fromiter((min(len(k) + 1, max_len) for k in keys), dtype=np.int64, count=len(keys))
        T = int(lengths.max()) if len(keys) else 1
        ids = np.full((len(keys), T), PAD_ID, dtype=np.int64)
        ids[:, 0] = CLS_ID
        for r, k in enumerate(keys):
            ids[r, 1 : lengths[r]] = k[: lengths[r] - 1]
        return ids, self.vocab.predicted[ids]

    def render(self, key: Key, keep: np.ndarray) -> tuple[str, ...] | None:
        """Template parts of an id sequence, where keep (L,) says which predicted tokens stay; None when
        the sequence holds unseen whitespace, which only the line itself can render."""
        if BLANK_ID in key:
            return None
        ids = np.asarray(key, dtype=np.int64)
        stay = np.where(self.vocab.predicted[ids], keep, self.vocab.literal[ids])
        return tuple(np.where(stay, self.vocab.tokens[ids], WILDCARD).tolist())

    def render_line(self, line: str, keep: np.ndarray) -> tuple[str, ...]:
        """Template parts of one line (the general form of `render`)."""
        tokens = self.tokenizer.tokenize(line)
        ids = np.fromiter(map(self._id, tokens), dtype=np.int64, count=len(tokens))
        stay = np.where(self.vocab.predicted[ids], keep, self.vocab.literal[ids])
        return tuple(t if s else WILDCARD for t, s in zip(tokens, stay.tolist(), strict=True))


WILDCARD = "<*>"
