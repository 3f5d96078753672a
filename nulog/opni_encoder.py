"""Opni's tokenizer and vocabulary, and `vocab.txt` as Opni's inference service reads it.

The rules are those of rancher/opni-inference-service, `opni_inference_service/models/opnilog/
opnilog_tokenizer.py`@0b1cbd569d5da811b2b4bda5eb852a297cb2b639 (`LogTokenizer`), as the service uses it after
`load_vocab` (see /work/notes/opni_facts.md §8.2-8.3):

- a line is lower-cased, `"<CLS> "` is put in front, it is split on single spaces and empty strings are
  dropped; a line with nothing but `<CLS>` gets `<EMPTY>`; a token holding at least two digits becomes `<NUM>`;
- ids: `<PAD>`=0, `<CLS>`=1, `<MASK>`=2, `<UNK>`=3, `<NUM>`=4, then the learned words from slot 5 on, in the
  order the training lines first show them, up to 10000 slots; any other word is `<UNK>`. Opni's tokenizer
  starts with `<EMPTY>` at 5 and then gives slot 5 to the first learned word too, so `vocab.txt` never holds
  `<EMPTY>` and the service reads it as `<UNK>`; training here uses the ids as the service will read them;
- `vocab.txt`: the slot count (10000), the next free slot, then one word per slot, `<TMPi>` in slot i when it
  is unused, each line ending in a newline.

Where this differs from Opni's tokenizer, it is so the file stays what the loader expects: a word holding a
newline or carriage return would take two lines of `vocab.txt` and shift every later id, so such a word is
not learned (it is `<UNK>`, as it would then be in Opni's own service). Nothing here needs torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from pathlib import Path

import numpy as np

from nulog.encoder import WILDCARD, Key, split_parts

N_WORDS = 10_000
SPECIALS = ("<PAD>", "<CLS>", "<MASK>", "<UNK>", "<NUM>")
PAD_ID, CLS_ID, MASK_ID, UNK_ID, NUM_ID = range(len(SPECIALS))
EMPTY = "<EMPTY>"
NUM = "<NUM>"


def _digits(token: str) -> int:
    return sum(c.isdigit() for c in token)


def words(line: str) -> list[str]:
    """Opni's tokens of a line, `<CLS>` first (`LogTokenizer.tokenize_data` then `tokenize`)."""
    tokens = [t for t in ("<CLS> " + line.lower()).split(" ") if t]
    if len(tokens) <= 1:
        tokens.append(EMPTY)
    return [NUM if _digits(t) > 1 else t for t in tokens]


def scored(word: str) -> bool:
    """Whether a label with this vocabulary word counts in a line's score: Opni's `num_there` skips any
    word that holds a digit (the tokenizer's `<NUM>` rule needs two)."""
    return not any(c.isdigit() for c in word)


def learnable(word: str) -> bool:
    return "\n" not in word and "\r" not in word


class OpniVocab:
    """Opni's vocabulary: a word per slot, the next free slot, and what each id is."""

    def __init__(self, slots: Sequence[str], valid_words: int) -> None:
        self.itos: list[str] = list(slots)
        self.valid_words = valid_words
        # As `load_vocab` builds it: a word met twice keeps its last slot.
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        # (V,) a label of this id counts in a score; trained: the model is trained to predict it.
        self.predicted = np.array([scored(w) for w in self.itos], dtype=bool)
        self.predicted[PAD_ID] = self.predicted[CLS_ID] = self.predicted[MASK_ID] = False
        self.trained = np.ones(len(self.itos), dtype=bool)
        self.trained[[PAD_ID, CLS_ID, MASK_ID]] = False
        self.tokens = np.array(self.itos, dtype=object)

    @classmethod
    def learn(cls, token_lists: Iterable[Sequence[str]], n_words: int = N_WORDS) -> OpniVocab:
        """The vocabulary Opni's `addWord` builds from these token lists, in order."""
        slots = [*SPECIALS, *(f"<TMP{i}>" for i in range(len(SPECIALS), n_words))]
        known = set(slots) | {EMPTY}
        free = len(SPECIALS)
        for tokens in token_lists:
            for w in tokens:
                if w not in known and learnable(w):
                    if free == n_words:
                        return cls(slots, free)
                    known.add(w)
                    slots[free] = w
                    free += 1
        return cls(slots, free)

    def __len__(self) -> int:
        return len(self.itos)

    def write(self, path: str | Path) -> None:
        """`vocab.txt` as `LogTokenizer.save_vocab` writes it."""
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(f"{len(self.itos)}\n{self.valid_words}\n")
            f.write("".join(w + "\n" for w in self.itos))

    @classmethod
    def read(cls, path: str | Path) -> OpniVocab:
        """A `vocab.txt` as `LogTokenizer.load_vocab` reads it."""
        with open(path, encoding="utf-8") as f:
            n_words = int(f.readline().rstrip())
            valid_words = int(f.readline().rstrip())
            slots = [line.replace("\n", "") for line in f]
        if len(slots) != n_words:
            raise ValueError(f"{path} says {n_words} words but holds {len(slots)}")
        return cls(slots, valid_words)


class OpniEncoder:
    """Lines to Opni's id sequences (without `<CLS>`), and those to padded model input; the interface of
    `nulog.encoder.LineEncoder` that training and `nulog.predict.Predictor` use."""

    def __init__(self, vocab: OpniVocab) -> None:
        self.vocab = vocab
        self.targets = vocab.trained

    @classmethod
    def fit_count(cls, per_line: Mapping[str, int], config: object = None) -> tuple[OpniEncoder, Counter[Key]]:
        """The vocabulary of the training lines, and how many lines have each id sequence."""
        token_lists = [words(line) for line in per_line]
        encoder = cls(OpniVocab.learn(token_lists))
        return encoder, encoder._count(token_lists, per_line.values())

    def count(self, per_line: Mapping[str, int]) -> Counter[Key]:
        return self._count([words(line) for line in per_line], per_line.values())

    def _count(self, token_lists: list[list[str]], counts: Iterable[int]) -> Counter[Key]:
        get, unk = self.vocab.stoi.get, UNK_ID
        out: Counter[Key] = Counter()
        for tokens, n in zip(token_lists, counts, strict=True):
            out[tuple(get(w, unk) for w in tokens[1:])] += n
        return out

    def key(self, line: str) -> Key:
        """The id sequence of a line, `<CLS>` left out."""
        get, unk = self.vocab.stoi.get, UNK_ID
        return tuple(get(w, unk) for w in words(line)[1:])

    def keys(self, lines: Iterable[str]) -> list[Key]:
        return [self.key(line) for line in lines]

    def model_input(self, key: Key, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids the model sees of a sequence (Opni cuts a line to max_len tokens, `<CLS>` included) and
        where each stands in it."""
        n = min(len(key), max_len - 1)
        return np.asarray(key[:n], dtype=np.int64), np.arange(n)

    def input_length(self, key: Key, max_len: int) -> int:
        """Positions of the model's input for this sequence, `<CLS>` included."""
        return min(len(key), max_len - 1) + 1

    def pad(self, keys: Sequence[Key], max_len: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """ids (B, T) with `<CLS>` at 0 and `<PAD>` after the end; select (B, T), the positions whose label
        counts in the score; for each row where its positions 1... stand in the sequence."""
        T = 1 + max((min(len(k), max_len - 1) for k in keys), default=0)
        ids = np.full((len(keys), T), PAD_ID, dtype=np.int64)
        ids[:, 0] = CLS_ID
        where = []
        for r, k in enumerate(keys):
            a, at = self.model_input(k, max_len)
            ids[r, 1 : 1 + len(a)] = a
            where.append(at)
        return ids, self.vocab.predicted[ids], where

    def render_many(self, keys: Sequence[Key], keep: np.ndarray) -> list[tuple[str, ...] | None]:
        """Templates of id sequences: a word stays where it counts and was found, else `<*>`; words joined
        by single spaces. None for a sequence with `<UNK>`, whose words only its line holds."""
        ids = np.fromiter(chain.from_iterable(keys), dtype=np.int64, count=len(keep))
        parts = np.where(self.vocab.predicted[ids] & keep, self.vocab.tokens[ids], WILDCARD).tolist()
        return split_parts(keys, parts, unrenderable=UNK_ID, join=_spaced)

    def render_line(self, line: str, keep: np.ndarray) -> tuple[str, ...]:
        tokens = words(line)[1:]
        ids = [self.vocab.stoi.get(w, UNK_ID) for w in tokens]
        return _spaced([t if s and self.vocab.predicted[i] else WILDCARD
                        for t, i, s in zip(tokens, ids, keep.tolist(), strict=True)])


def _spaced(parts: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for p in parts:
        if out:
            out.append(" ")
        out.append(p)
    return tuple(out)
