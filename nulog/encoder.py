"""The one encoder of log lines, shared by training and prediction: a line becomes its id sequence.

What the model predicts for a line depends on its id sequence alone (digit-bearing variables share `<NUM>`,
unseen words `<UNK>`), so both training and prediction work once per distinct id sequence: many distinct
lines are one sequence. Nothing here needs torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain

import numpy as np

from nulog.config import TrainConfig
from nulog.tokenizer import BLANK_ID, CLS_ID, PAD_ID, Tokenizer, Vocab

Key = tuple[int, ...]  # a line's id sequence, without <CLS>, not cut to the model's max_len


def split_parts(keys: Sequence[Key], parts: list[str], *, unrenderable: int,
                join: Callable[[list[str]], tuple[str, ...]]) -> list[tuple[str, ...] | None]:
    """The template of each id sequence from the parts of all of them in a row (their lengths summed); None
    for a sequence holding the `unrenderable` id, whose words only its line holds."""
    out: list[tuple[str, ...] | None] = []
    start = 0
    for k in keys:
        out.append(None if unrenderable in k else join(parts[start : start + len(k)]))
        start += len(k)
    return out


# Tokens outside the vocabulary whose ids a LineEncoder remembers before it starts again.
LOOKUP_EXTRA = 1 << 16
PARTS_CACHED = 1 << 17  # words and whitespace runs whose ids `keys` keeps; past that it starts again


class _Lookup(dict):
    """The vocabulary's token -> id, and the ids of tokens outside it once asked (up to LOOKUP_EXTRA of
    them), so that every token seen before is found by the dict itself, without a call into Python."""

    def __init__(self, stoi: dict[str, int]) -> None:
        super().__init__(stoi)
        self._stoi = stoi
        self._room = LOOKUP_EXTRA

    def __missing__(self, token: str) -> int:
        i = self._stoi[token]
        if self._room == 0:
            self.clear()
            self.update(self._stoi)
            self._room = LOOKUP_EXTRA
        self._room -= 1
        self[token] = i
        return i


class LineEncoder:
    """A tokenizer and a vocabulary: lines to id sequences, and id sequences to padded model input."""

    def __init__(self, tokenizer: Tokenizer, vocab: Vocab) -> None:
        self.tokenizer = tokenizer
        self.vocab = vocab
        self._id = _Lookup(vocab.stoi).__getitem__
        self._parts: dict[str, tuple[int, ...]] = {}  # word or whitespace run -> its ids (see `keys`)

    @classmethod
    def fit(cls, distinct_lines: Iterable[str], config: TrainConfig) -> LineEncoder:
        """Build the vocabulary from distinct training lines."""
        return cls.fit_count({line: 1 for line in distinct_lines}, config)[0]

    @classmethod
    def fit_count(cls, per_line: Mapping[str, int], config: TrainConfig) -> tuple[LineEncoder, Counter[Key]]:
        """The vocabulary of distinct training lines (with how often each occurs), and how many lines have
        each id sequence, from one tokenization of each line."""
        tokenizer = Tokenizer(config.filters)
        token_lists = [tokenizer.tokenize(line) for line in per_line]
        vocab = Vocab.build(token_lists, digit_min_lines=config.digit_min_lines,
                            digit_slot_share=config.digit_slot_share, is_delimiter=tokenizer.is_delimiter)
        encoder = cls(tokenizer, vocab)
        return encoder, encoder._count(token_lists, per_line.values())

    @property
    def filters(self) -> str:
        return self.tokenizer.filters

    @property
    def targets(self) -> np.ndarray:
        """(V,) bool: the ids the model is trained to predict."""
        return self.vocab.predicted

    def input_length(self, key: Key, max_len: int) -> int:
        """Positions of the model's input for this sequence, `<CLS>` included (whitespace and delimiters are
        left out)."""
        if not key:
            return 1
        return min(len(key) - int(self.vocab.layout[np.asarray(key, dtype=np.int64)].sum()), max_len - 1) + 1

    def key(self, line: str) -> Key:
        """The id sequence of a line."""
        return tuple(map(self._id, self.tokenizer.iter_tokens(line)))

    @classmethod
    def load(cls, filters: str, tokens: list[str]) -> LineEncoder:
        """The encoder of a saved vocabulary."""
        tokenizer = Tokenizer(filters)
        return cls(tokenizer, Vocab(tokens, is_delimiter=tokenizer.is_delimiter))

    def keys(self, lines: Iterable[str]) -> list[Key]:
        """The id sequences of many lines (`key` of each, with its calls inlined: this runs per line)."""
        split = self.tokenizer.split_pattern
        if split is None:
            return list(map(self.key, lines))
        get, splitter = self._id, split.split
        runs = self.tokenizer.runs_pattern
        if runs is None:
            return [tuple(map(get, filter(None, splitter(line)))) for line in lines]
        # The ids of each word and whitespace run, found once: words recur far more than lines do (a quarter
        # less time than splitting each line whole on the sample logs).
        parts = self._parts
        if len(parts) > PARTS_CACHED:
            parts.clear()
        seen, out = parts.get, []
        for line in lines:
            ids: list[int] = []
            for part in runs.split(line):
                found = seen(part)
                if found is None:
                    found = parts[part] = tuple(map(get, filter(None, splitter(part))))
                ids += found
            out.append(tuple(ids))
        return out

    def count(self, per_line: Mapping[str, int]) -> Counter[Key]:
        """How many lines have each id sequence, in first-seen order, from how often each distinct line
        occurs."""
        tokenize = self.tokenizer.tokenize
        return self._count([tokenize(line) for line in per_line], per_line.values())

    def _count(self, token_lists: list[list[str]], counts: Iterable[int]) -> Counter[Key]:
        get = self._id
        out: Counter[Key] = Counter()
        for tokens, n in zip(token_lists, counts, strict=True):
            out[tuple(map(get, tokens))] += n
        return out

    def model_input(self, key: Key, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """What the model sees of an id sequence: its ids without whitespace and delimiters, at most
        max_len - 1 of them, and where each stands in the sequence."""
        ids = np.asarray(key, dtype=np.int64)
        at = np.flatnonzero(~self.vocab.layout[ids])[: max_len - 1]
        return ids[at], at

    def pad(self, keys: Sequence[Key], max_len: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Model input for id sequences: ids (B, T) int64 with `<CLS>` at 0 and `<PAD>` after the end,
        select (B, T) bool, the positions the model predicts, and for each row where its positions 1...
        stand in the sequence."""
        inputs = [self.model_input(k, max_len) for k in keys]
        T = 1 + max((len(a) for a, _ in inputs), default=0)
        ids = np.full((len(keys), T), PAD_ID, dtype=np.int64)
        ids[:, 0] = CLS_ID
        for r, (a, _) in enumerate(inputs):
            ids[r, 1 : 1 + len(a)] = a
        return ids, self.vocab.predicted[ids], [at for _, at in inputs]

    def render_many(self, keys: Sequence[Key], keep: np.ndarray) -> list[tuple[str, ...] | None]:
        """Template parts of id sequences, where keep (the sequences' lengths summed,) says which predicted
        tokens stay; None for a sequence that holds unseen whitespace, which only its line can render."""
        ids = np.fromiter(chain.from_iterable(keys), dtype=np.int64, count=len(keep))
        stay = np.where(self.vocab.predicted[ids], keep, self.vocab.literal[ids])
        parts = np.where(stay, self.vocab.tokens[ids], WILDCARD).tolist()
        return split_parts(keys, parts, unrenderable=BLANK_ID, join=tuple)

    def render_line(self, line: str, keep: np.ndarray) -> tuple[str, ...]:
        """Template parts of one line (the general form of `render`)."""
        tokens = self.tokenizer.tokenize(line)
        ids = np.fromiter(map(self._id, tokens), dtype=np.int64, count=len(tokens))
        stay = np.where(self.vocab.predicted[ids], keep, self.vocab.literal[ids])
        return tuple(t if s else WILDCARD for t, s in zip(tokens, stay.tolist(), strict=True))


WILDCARD = "<*>"

