"""Splits log lines into tokens and maps tokens to ids.

NuLog splits with a dataset's `filters` regex and keeps what the regex matches as tokens of their own, so a
line is exactly the concatenation of its tokens and a template can be rendered by joining them back. The
controller masks variables before training (`<NUM>`, `<IP>`, ...); such placeholders are always single tokens.

Digit-bearing tokens are mostly ids, addresses and counters, which would only grow the vocabulary and the
output layer; they share one id (`<NUM>`) and become `<*>`. Some are constants of their message (`eth0`,
`HTTP/1.1`, `x86_64`): `constant_digit_tokens` finds those in the training lines, and they get ids of their
own and are predicted like any other word. Every id has a class that fixes how a token of it is treated:
predicted or not, and rendered as itself or as `<*>`; the template of a line therefore depends on its ids
alone (except `<BLANK>`, whitespace never seen in training, which is rendered from the line).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import chain

import numpy as np

from nulog.config import DEFAULT_FILTERS

PAD, CLS, MASK, UNK, NUM, BLANK = "<PAD>", "<CLS>", "<MASK>", "<UNK>", "<NUM>", "<BLANK>"
SPECIALS = (PAD, CLS, MASK, UNK, NUM, BLANK)
PAD_ID, CLS_ID, MASK_ID, UNK_ID, NUM_ID, BLANK_ID = range(len(SPECIALS))

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")
_DIGIT = re.compile(r"\d")


def is_placeholder(token: str) -> bool:
    """True for a masking placeholder such as `<IP>`."""
    return PLACEHOLDER.fullmatch(token) is not None


def has_digit(token: str) -> bool:
    return _DIGIT.search(token) is not None


def is_blank(token: str) -> bool:
    """True for whitespace, which is always part of a template and never worth predicting."""
    return token.isspace()


def _min_width(pattern: str) -> int:
    try:
        return re._parser.parse(pattern).getwidth()[0]  # type: ignore[attr-defined]
    except Exception:  # a private module of re: if it moves, the general path below still gives the tokens
        return 0


class Tokenizer:
    """Regex splitter that keeps delimiters and placeholders as tokens; `"".join(tokenize(s)) == s`."""

    def __init__(self, filters: str | None = DEFAULT_FILTERS) -> None:
        self.filters = filters or ""
        # The placeholder alternative comes first so `blk_<NUM>` splits into `blk_` and `<NUM>`.
        pattern = PLACEHOLDER.pattern if not self.filters else f"{PLACEHOLDER.pattern}|{self.filters}"
        self._find = re.compile(pattern)
        # re.split runs in C; it is only used where no match can be empty, since split would cut there.
        self._split = re.compile(f"({pattern})") if _min_width(pattern) > 0 else None
        self._stride = self._split.groups + 1 if self._split else 0

    def tokenize(self, line: str) -> list[str]:
        """Split a line into tokens: the text between matches and every non-empty match."""
        if self._split is not None:
            parts = self._split.split(line)
            n = self._stride
            texts = parts[::n]  # the text before each match, and after the last
            tokens = list(filter(None, chain.from_iterable(zip(texts, parts[1::n], strict=False))))
            if texts[-1]:
                tokens.append(texts[-1])
            return tokens
        tokens = []
        pos = 0
        for m in self._find.finditer(line):
            start, end = m.span()
            if start == end:
                continue
            if start > pos:
                tokens.append(line[pos:start])
            tokens.append(line[start:end])
            pos = end
        if pos < len(line):
            tokens.append(line[pos:])
        return tokens


def _is_variable(token: str) -> bool:
    return has_digit(token) or is_placeholder(token)


def constant_digit_tokens(token_lists: Iterable[list[str]], *, min_lines: int, slot_share: float) -> set[str]:
    """The digit-bearing tokens that behave as constants in these (distinct) lines.

    A token's slot is its nearest non-blank neighbours, with variable neighbours taken as one class. A
    token holds a slot when it fills at least `slot_share` of the slot's occurrences, over at least
    `min_lines` of them. A token is a constant when it occurs in at least `min_lines` lines and
    `slot_share` of its occurrences are in slots it holds: `eth0` in `link eth0 up`, but not the `1` of
    `PacketResponder 1` when 0, 1 and 2 share that slot, nor a counter, whose values never repeat enough.
    Occurrences are counted in distinct lines, since a repeated line says nothing new about its slots.
    """
    slot: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    where: defaultdict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for tokens in token_lists:
        words = [t for t in tokens if not t.isspace()]
        for i, t in enumerate(words):
            if not has_digit(t) or is_placeholder(t):
                continue
            before = "^" if i == 0 else ("#" if _is_variable(words[i - 1]) else words[i - 1])
            after = "$" if i + 1 == len(words) else ("#" if _is_variable(words[i + 1]) else words[i + 1])
            slot[before, after][t] += 1
            where[t][before, after] += 1
    constants = set()
    for t, slots in where.items():
        seen = sum(slots.values())
        if seen < min_lines:
            continue
        held = 0
        for s, n in slots.items():
            total = sum(slot[s].values())
            if total >= min_lines and n >= slot_share * total:
                held += n
        if held >= slot_share * seen:
            constants.add(t)
    return constants


class _Ids(dict):
    """token -> id; a token not in the vocabulary gets the id of its class."""

    def __missing__(self, token: str) -> int:
        if token.isspace():
            return BLANK_ID
        return NUM_ID if _is_variable(token) else UNK_ID


class Vocab:
    """Token <-> id table: the specials first, then digit-free tokens and constant digit-bearing ones."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.itos: list[str] = list(SPECIALS)
        for t in tokens:
            if t not in SPECIALS:
                self.itos.append(t)
        self.stoi: dict[str, int] = _Ids((t, i) for i, t in enumerate(self.itos))
        assert len(self.stoi) == len(self.itos), "vocabulary tokens must be unique"
        special = np.arange(len(self.itos)) < len(SPECIALS)
        placeholder = np.array([is_placeholder(t) for t in self.itos], dtype=bool)
        blank = np.array([t.isspace() for t in self.itos], dtype=bool)
        # (V,) what a token of each id is: predicted by the model (an unseen word is, and is always
        # missed), and rendered as itself in a template when it is not predicted.
        self.predicted = (~special & ~placeholder & ~blank) | (np.arange(len(self.itos)) == UNK_ID)
        self.literal = ~special & ~placeholder & blank
        self.literal[BLANK_ID] = True  # rendered from the line's own token
        self.tokens = np.array(self.itos, dtype=object)

    @classmethod
    def build(cls, token_lists: list[list[str]], *, digit_min_lines: int = 3, digit_slot_share: float = 0.9) -> Vocab:
        """Collect the digit-free tokens and the constant digit-bearing ones of these distinct lines, most
        frequent first (ties by first appearance)."""
        constants = constant_digit_tokens(token_lists, min_lines=digit_min_lines, slot_share=digit_slot_share)
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        return cls(t for t, _ in counts.most_common() if not has_digit(t) or t in constants)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]) -> list[int]:
        """Ids of a token list, without `<CLS>`."""
        return list(map(self.stoi.__getitem__, tokens))
