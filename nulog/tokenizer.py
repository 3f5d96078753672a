"""Splits log lines into tokens and maps tokens to ids.

NuLog splits with a dataset's `filters` regex and keeps what the regex matches as tokens of their own, so a
line is exactly the concatenation of its tokens and a template can be rendered by joining them back. The
controller masks variables before training (`<NUM>`, `<IP>`, ...); such placeholders are always single tokens.
Tokens holding a digit are variables by definition: they share one id (`<NUM>`) so that ids never grow the
vocabulary or the output layer.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from nulog.config import DEFAULT_FILTERS

PAD, CLS, MASK, UNK, NUM = "<PAD>", "<CLS>", "<MASK>", "<UNK>", "<NUM>"
SPECIALS = (PAD, CLS, MASK, UNK, NUM)
PAD_ID, CLS_ID, MASK_ID, UNK_ID, NUM_ID = range(len(SPECIALS))

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")
_DIGIT = re.compile(r"\d")


def is_placeholder(token: str) -> bool:
    """True for a masking placeholder such as `<IP>`."""
    return PLACEHOLDER.fullmatch(token) is not None


def is_variable(token: str) -> bool:
    """True when a token can never be part of a template: it holds a digit or is a placeholder."""
    return _DIGIT.search(token) is not None or is_placeholder(token)


def is_blank(token: str) -> bool:
    """True for whitespace, which is always part of a template and never worth predicting."""
    return token.isspace()


class Tokenizer:
    """Regex splitter that keeps delimiters and placeholders as tokens; `"".join(tokenize(s)) == s`."""

    def __init__(self, filters: str | None = DEFAULT_FILTERS) -> None:
        self.filters = filters or ""
        # The placeholder alternative comes first so `blk_<NUM>` splits into `blk_` and `<NUM>`.
        pattern = PLACEHOLDER.pattern if not self.filters else f"{PLACEHOLDER.pattern}|{self.filters}"
        self._split = re.compile(pattern)

    def tokenize(self, line: str) -> list[str]:
        """Split a line into tokens: the text between matches and every non-empty match."""
        tokens: list[str] = []
        pos = 0
        for m in self._split.finditer(line):
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


class Vocab:
    """Token <-> id table; the first ids are the specials, digit-holding tokens all map to `<NUM>`."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.itos: list[str] = list(SPECIALS)
        for t in tokens:
            if t not in SPECIALS:
                self.itos.append(t)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        assert len(self.stoi) == len(self.itos), "vocabulary tokens must be unique"

    @classmethod
    def build(cls, token_lists: Iterable[list[str]], *, min_count: int = 1) -> Vocab:
        """Collect every digit-free token, most frequent first (ties by first appearance)."""
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(t for t in tokens if not _DIGIT.search(t))
        return cls(t for t, c in counts.most_common() if c >= min_count)

    def __len__(self) -> int:
        return len(self.itos)

    def id(self, token: str) -> int:
        """The id of one token; `<NUM>` for digit-holding tokens, `<UNK>` for unseen ones."""
        i = self.stoi.get(token)
        if i is not None:
            return i
        return NUM_ID if _DIGIT.search(token) else UNK_ID

    def encode(self, tokens: list[str]) -> list[int]:
        """Ids of a token list, without `<CLS>`."""
        return [self.id(t) for t in tokens]
