"""Splits log lines into tokens and maps tokens to ids.

NuLog splits with a dataset's `filters` regex and keeps what the regex matches as tokens of their own, so a
line is exactly the concatenation of its tokens and a template can be rendered by joining them back. The
controller masks variables before training (`<NUM>`, `<IP>`, ...); such placeholders are always single tokens.

Digit-bearing tokens are mostly ids, addresses and counters, which would only grow the vocabulary and the
output layer; they share one id (`<NUM>`) and become `<*>`. Some are constants of their message (`eth0`,
`HTTP/1.1`, `x86_64`): `constant_digit_tokens` finds those in the training lines, and they get ids of their
own and are predicted like any other word. Every id has a class that fixes how a token of it is treated:
predicted or not, and rendered as itself or as `<*>`; the template of a line therefore depends on its ids
alone (except `<BLANK>`, whitespace or a delimiter never seen in training, rendered from the line).
"""

from __future__ import annotations

import functools
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

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


def _without_groups(pattern: str) -> str | None:
    """The pattern with every capturing group made non-capturing, or None where that could change what
    it matches (a backreference)."""
    if re.search(r"\\[1-9]|\(\?P=", pattern):
        return None
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":  # a leading ] is a member of the class
                out.append("[]")
                i += 2
                continue
        elif c == "(" and pattern[i + 1 : i + 2] != "?":
            c = "(?:"
        out.append(c)
        i += 1
    return "".join(out)


_SPACE = re.compile(r"\s")
_RUNS = re.compile(r"(\s+)")  # a line as text and whitespace runs, alternating


def _whitespace_separates(flat: str) -> bool:
    """Whether a line's tokens are those of its whitespace runs and of the text between them, each
    tokenized alone (the encoder then reuses the tokens of a word it has seen).

    True where every match of `flat` is all whitespace or holds none, no match looks around (anchors,
    lookarounds, word boundaries), and some alternative matches any whitespace: then a whitespace character
    is never in a text token nor in a match with other characters, and no match reaches across a run's edge.
    Decided conservatively from the parsed pattern: anything not plainly one of those is False.
    """
    try:
        parsed = re._parser.parse(flat)  # type: ignore[attr-defined]
    except Exception:  # a private module of re: if it moves, lines are tokenized whole
        return False
    alternatives = _alternatives(list(parsed))
    return None not in map(_kind, alternatives) and any(map(_covers_space, alternatives))


# What a piece of a parsed pattern matches: "space" (whitespace only), "solid" (never whitespace), or None
# (either, or not known).
Kind = str | None


def _one(kinds: set[Kind]) -> Kind:
    return kinds.pop() if len(kinds) == 1 and None not in kinds else None


def _char_kind(code: int) -> Kind:
    return "space" if _SPACE.match(chr(code)) else "solid"


def _group(op: object, value: tuple) -> list | None:
    """The items of a group without inline flags; None for anything else."""
    return list(value[3]) if str(op) == "SUBPATTERN" and not value[1] and not value[2] else None


def _alternatives(sequence: list) -> list[list]:
    """The top-level alternatives, those of groups of alternatives included."""
    while len(sequence) == 1 and (inner := _group(*sequence[0])) is not None:
        sequence = inner
    if len(sequence) == 1 and str(sequence[0][0]) == "BRANCH":
        return [a for branch in sequence[0][1][1] for a in _alternatives(list(branch))]
    return [sequence]


def _kind(items: list) -> Kind:
    """What a parsed pattern (or the items of a character class) matches: only whitespace, only other
    characters, or either (None, as for anything not understood). Ranges and categories stand only in
    classes, repeats and groups only outside them, so one walk serves both."""
    kinds: set[Kind] = set()
    for op, value in items:
        name = str(op)
        if name == "LITERAL":
            kinds.add(_char_kind(value))
        elif name == "IN":
            kinds.add(_kind(value))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            kinds.add(_kind(list(value[2])))
        elif (inner := _group(op, value)) is not None:
            kinds.add(_kind(inner))
        elif name == "RANGE":
            spaces = sum(1 for code in _space_codes() if value[0] <= code <= value[1])
            kinds.add("solid" if spaces == 0 else "space" if spaces == value[1] - value[0] + 1 else None)
        elif name == "CATEGORY" and str(value) == "CATEGORY_SPACE":
            kinds.add("space")
        elif name == "CATEGORY" and str(value) in ("CATEGORY_DIGIT", "CATEGORY_WORD"):
            kinds.add("solid")
        else:
            return None
    return _one(kinds)


def _covers_space(sequence: list) -> bool:
    r"""`\s` or `\s+` (a class of `\s` alone, at least once): it matches at every whitespace character."""
    if len(sequence) != 1:
        return False
    op, value = sequence[0]
    if str(op) in ("MAX_REPEAT", "POSSESSIVE_REPEAT") and value[0] == 1:
        return _covers_space(list(value[2]))
    if (inner := _group(op, value)) is not None:
        return _covers_space(inner)
    return str(op) == "IN" and [(str(o), str(v)) for o, v in value] == [("CATEGORY", "CATEGORY_SPACE")]


@functools.cache
def _space_codes() -> tuple[int, ...]:
    r"""Every code point `\s` matches (none lies above U+3000)."""
    return tuple(code for code in range(0x3001) if _SPACE.match(chr(code)))


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
        # re.split runs in C; it is only used where no match can be empty, since split would cut there, and
        # with one group, so that it returns text and matches alone.
        flat = _without_groups(pattern)
        split = re.compile(f"({flat})") if flat is not None and _min_width(flat) > 0 else None
        self._split = split if split is not None and split.groups == 1 else None
        self._runs = _RUNS if self._split is not None and flat is not None and _whitespace_separates(flat) else None
        self._delimiter = re.compile(self.filters) if self.filters else None

    def is_delimiter(self, token: str) -> bool:
        """True for a token the filters match whole: part of the format, like whitespace."""
        return token.isspace() or (self._delimiter is not None and self._delimiter.fullmatch(token) is not None)

    def tokenize(self, line: str) -> list[str]:
        """Split a line into tokens: the text between matches and every non-empty match."""
        return list(self.iter_tokens(line))

    @property
    def runs_pattern(self) -> re.Pattern[str] | None:
        """Where a line's tokens are its words' and whitespace runs' tokens, each found alone: the pattern
        whose `split` gives those parts (see `_whitespace_separates`)."""
        return self._runs

    @property
    def split_pattern(self) -> re.Pattern[str] | None:
        """The one-group pattern whose `split` gives texts and matches alternating, where there is one."""
        return self._split

    def iter_tokens(self, line: str) -> Iterable[str]:
        """The tokens of a line, lazily where that is faster."""
        if self._split is not None:
            return filter(None, self._split.split(line))  # texts and matches, alternating
        return self._tokenize_slowly(line)

    def _tokenize_slowly(self, line: str) -> list[str]:
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


def constant_digit_tokens(
    token_lists: list[list[str]], *, min_lines: int, slot_share: float, counts: Counter[str] | None = None
) -> set[str]:
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
    if counts is None:
        counts = _count(token_lists)
    placeholders = {t for t in counts if is_placeholder(t)}  # one regex per distinct token, not per use
    digit = {t for t in counts if t not in placeholders and has_digit(t)}
    variable = digit | placeholders
    for tokens in token_lists:
        if digit.isdisjoint(tokens):
            continue
        words = [t for t in tokens if not t.isspace()]
        for i, t in enumerate(words):
            if t not in digit:
                continue
            before = "^" if i == 0 else ("#" if words[i - 1] in variable else words[i - 1])
            after = "$" if i + 1 == len(words) else ("#" if words[i + 1] in variable else words[i + 1])
            slot[before, after][t] += 1
            where[t][before, after] += 1
    totals = {s: sum(c.values()) for s, c in slot.items()}
    constants = set()
    for t, slots in where.items():
        seen = sum(slots.values())
        if seen < min_lines:
            continue
        held = 0
        for s, n in slots.items():
            total = totals[s]
            if total >= min_lines and n >= slot_share * total:
                held += n
        if held >= slot_share * seen:
            constants.add(t)
    return constants


def _count(token_lists: list[list[str]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    return counts


class _Ids(dict):
    """token -> id; a token not in the vocabulary gets the id of its class. (Encoders remember those ids,
    in a bounded lookup of their own: `nulog.encoder`.)"""

    def __init__(self, pairs: Iterable[tuple[str, int]], is_delimiter: Callable[[str], bool]) -> None:
        super().__init__(pairs)
        self._is_delimiter = is_delimiter

    def __missing__(self, token: str) -> int:
        return BLANK_ID if self._is_delimiter(token) else NUM_ID if _is_variable(token) else UNK_ID


class Vocab:
    """Token <-> id table: the specials first, then digit-free tokens and constant digit-bearing ones."""

    def __init__(self, tokens: Iterable[str], *, is_delimiter: Callable[[str], bool] = str.isspace) -> None:
        self.itos: list[str] = list(SPECIALS)
        for t in tokens:
            if t not in SPECIALS:
                self.itos.append(t)
        self.stoi: dict[str, int] = _Ids(((t, i) for i, t in enumerate(self.itos)), is_delimiter)
        assert len(self.stoi) == len(self.itos), "vocabulary tokens must be unique"
        special = np.arange(len(self.itos)) < len(SPECIALS)
        placeholder = np.array([is_placeholder(t) for t in self.itos], dtype=bool)
        blank = np.array([t.isspace() for t in self.itos], dtype=bool)
        # Delimiters (what the filters match) are the format, as constant as whitespace: never predicted.
        delimiter = ~special & (blank | np.array([is_delimiter(t) for t in self.itos], dtype=bool))
        # (V,) what a token of each id is: predicted by the model (an unseen word is, and is always
        # missed), and rendered as itself in a template when it is not predicted.
        self.predicted = (~special & ~placeholder & ~delimiter) | (np.arange(len(self.itos)) == UNK_ID)
        self.literal = ~special & ~placeholder & delimiter
        self.literal[BLANK_ID] = True  # rendered from the line's own token
        # Whitespace and delimiters are left out of the model's input as well: they are never predicted and
        # always kept, and take half the positions of a typical line (on LogHub, GA is unchanged).
        self.layout = delimiter.copy()
        self.layout[BLANK_ID] = True
        self.tokens = np.array(self.itos, dtype=object)

    @classmethod
    def build(cls, token_lists: list[list[str]], *, digit_min_lines: int = 3, digit_slot_share: float = 0.9,
              is_delimiter: Callable[[str], bool] = str.isspace) -> Vocab:
        """Collect the digit-free tokens and the constant digit-bearing ones of these distinct lines, most
        frequent first (ties by first appearance)."""
        counts = _count(token_lists)
        constants = constant_digit_tokens(token_lists, min_lines=digit_min_lines, slot_share=digit_slot_share,
                                          counts=counts)
        return cls((t for t, _ in counts.most_common() if not has_digit(t) or t in constants),
                   is_delimiter=is_delimiter)

    def __len__(self) -> int:
        return len(self.itos)
