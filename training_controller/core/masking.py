"""Masking of variable values in log messages before they become training data.

NuLog learns which tokens are constant in a message type. Values that are obviously variable (addresses,
ids, numbers, times) carry no information for that and would only bloat the vocabulary, so they are replaced
by placeholders such as `<IP>` or `<NUM>` first, as Opni's preprocessing does. The same function must be
applied to a line before it is scored by a model trained on masked data.

`RULES` define masking: each pattern, in order, replaces its matches in what the rules before it left
(`mask_reference` does exactly that). One exception: a dotted version glued by `/` to the product name that
starts a token (`HTTP/1.1`, `Mozilla/5.0`, `Chrome/120.0.0.0`) is neither an address nor a count, so the
`<IP>` and `<NUM>` rules leave it: constants that hold digits are the model's call. A number after a path
segment (`/api/items/12345`, `/v/1.5`) is still masked. A product is words of letters, digits and `_`, each
starting with a letter, joined by `.` or `-` (`Go-http-client`), not preceded by a word character, `.`, `-`
or `/`.

The export masks every line of every training, so `mask_lines` computes the same result much faster (a test
compares the two on generated, sample and random lines): the lines of a batch are joined by NUL into one
string, so that each rule is one scan in C rather than one per line; ASCII text is scanned with ASCII
classes, which are the same on it (but for the separators \\x1c-\\x1f); each pattern is rewritten so that
the regex engine can skip ahead to a character the match must hold (the `:` of a time, the `-` of a UUID),
then looks back for the start the original pattern would have found; and on ASCII text a batch becomes a
string of character classes (`bytes.translate`) in which `bytes.find` jumps to the runs a long hex id or a
duration needs. The rewrites are exact only because of how each original pattern is built; the notes
beside them say why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

# Order matters: the wider patterns run first so that a URL is not taken apart into an IP and numbers.
RULES: tuple[tuple[str, str], ...] = (
    ("<URL>", r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+"),
    ("<EMAIL>", r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    ("<UUID>", r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
    (
        "<TIMESTAMP>",
        r"\b\d{4}[-/]\d{2}[-/]\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2}|\s?UTC)?"
        r"|\b\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}(?:\s[+-]\d{4})?",
    ),
    ("<DATE>", r"\b\d{4}[-/]\d{2}[-/]\d{2}\b"),
    ("<TIME>", r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"),
    ("<IP>", r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"),
    ("<HEX>", r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"),
    ("<DURATION>", r"\b\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)\b"),
    ("<NUM>", r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.])"),
)
VERSIONED = frozenset({"<IP>", "<NUM>"})  # the rules that leave a `product/1.2` version alone

_PRODUCT = r"[A-Za-z][A-Za-z0-9_]*(?:[.\-][A-Za-z][A-Za-z0-9_]*)*"
_PRODUCT_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_PRODUCT_BEFORE_SLASH = re.compile(rf"(?<![A-Za-z0-9_./\-]){_PRODUCT}/\Z")
_PRODUCT_WHOLE = re.compile(_PRODUCT)


def is_version(text: str, start: int, value: str) -> bool:
    """Whether the match `value` at `start` is a dotted version right after `product/`."""
    return "." in value and _PRODUCT_BEFORE_SLASH.search(text[:start]) is not None


def mask_reference(message: str) -> str:
    """`RULES` applied one after the other: the definition of masking (slow; `mask_lines` is the fast path)."""
    for placeholder, source in RULES:
        pattern = re.compile(source)
        if placeholder in VERSIONED:
            message = pattern.sub(
                lambda m, p=placeholder: m[0] if is_version(m.string, m.start(), m[0]) else p, message
            )
        else:
            message = pattern.sub(placeholder, message)
    return message


# --- the fast path ---------------------------------------------------------------------------------------

SEP = "\x00"  # joins the lines of a batch; a line that holds one is masked alone
# The only ASCII characters on which ASCII `\s` is not Unicode `\s` (file, group, record, unit separators).
_ASCII_UNSAFE = re.compile(r"[\x1c-\x1f]")
Pass = Callable[[str], str]


def _version_fast(text: str, start: int) -> bool:
    """`is_version` for a match right after a `/` at start - 1, without copying the text before it."""
    slash = start - 1
    lo = max(0, slash - 64)
    while True:  # the run of product characters before the slash, widened until it is whole
        before = text[lo:slash]
        run = len(before) - len(before.rstrip(_PRODUCT_CHARS))
        if run < len(before) or lo == 0:
            break
        lo = max(0, lo - 1024)
    first = slash - run
    return (first == 0 or text[first - 1] != "/") and _PRODUCT_WHOLE.fullmatch(text, first, slash) is not None


# For the ASCII passes that look for a run of character classes: `bytes.translate` maps a whole batch to
# class letters in one C loop, and `bytes.find` then jumps to the few places worth a regex.
def _classes(letters: dict[str, str]) -> bytes:
    table = bytearray(b" " * 256)
    for chars, letter in letters.items():
        for char in chars:
            table[ord(char)] = ord(letter)
    return bytes(table)


def _gated(pattern: re.Pattern[str], literal: str, placeholder: str, *, run: str) -> Pass:
    """The pattern, searched for only where `literal` is: from the start of the run of `run` characters
    that ends at the literal (where any match that holds it starts) to the end of its line."""
    classes = _classes({run: "r"})

    def apply(text: str) -> str:
        parts, last, pos = [], 0, 0
        kinds: bytes | None = None
        while (found := text.find(literal, pos)) != -1:
            if kinds is None and text.isascii():
                kinds = text.encode("ascii").translate(classes)
            end = text.find(SEP, found)
            end = len(text) if end == -1 else end
            if kinds is None:
                start = text.rfind(SEP, 0, found) + 1
            else:  # ASCII: characters are bytes, so the class string lines up with the text
                start = kinds.rfind(b" ", 0, found) + 1
            # Within its own line (endpos ends the string as the line's end did); lookbehind still sees
            # the character before `start`, as it would in the line.
            m = pattern.search(text, max(last, start), end)
            if m is None:
                pos = end + 1
                continue
            parts += (text[last : m.start()], placeholder)
            last = pos = m.end()
        return "".join((*parts, text[last:])) if parts else text

    return apply


def _anchored(
    pattern: re.Pattern[str], placeholder: str, back: Callable[[re.Match[str]], int], least: int
) -> Pass:
    """A pattern rewritten to match from a character `back(m)` (at least `least`) after the original start.

    The original finds the leftmost start; for these patterns the anchor is a fixed distance from the start,
    so the leftmost anchor gives the leftmost start. A match may not begin before the end of the last one.
    """

    def apply(text: str) -> str:
        parts, last, pos = [], 0, least
        while (m := pattern.search(text, pos)) is not None:
            start = m.start() - back(m)
            if start < last:
                pos = m.start() + 1
                continue
            value = placeholder
            if placeholder in VERSIONED and text[start - 1 : start] == "/" and _version_fast(text, start):
                value = text[start : m.end()]
            parts += (text[last:start], value)
            last = m.end()
            pos = last + least
        return "".join((*parts, text[last:])) if parts else text

    return apply


def _substitute(pattern: re.Pattern[str], placeholder: str) -> Pass:
    return lambda text: pattern.sub(placeholder, text)


def _substitute_as(placeholder: str) -> Callable[[re.Pattern[str]], Pass]:
    return lambda pattern: _substitute(pattern, placeholder)


def _reversed(pattern: re.Pattern[str], placeholder: str) -> Pass:
    """A pattern that runs over the reversed text (see the `<NUM>` pass)."""
    backwards = placeholder[::-1]
    return lambda text: pattern.sub(backwards, text[::-1])[::-1]


_ASCII_CLASSES = {  # escape: (outside a class, inside one)
    "d": ("[0-9]", "0-9"),
    "w": ("[A-Za-z0-9_]", "A-Za-z0-9_"),
    "s": ("[ \\t\\n\\r\\f\\v]", " \\t\\n\\r\\f\\v"),
}


def _spelled_ascii(source: str) -> str:
    """The pattern with `\\d`, `\\w` and `\\s` spelled as ASCII sets: the same under re.ASCII, and faster."""
    out, in_class, i = [], False, 0
    while i < len(source):
        char = source[i]
        if char == "\\":
            escaped = source[i + 1]
            out.append(_ASCII_CLASSES[escaped][in_class] if escaped in _ASCII_CLASSES else source[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            if source[i + 1 : i + 2] == "]" or source[i + 1 : i + 3] == "^]":  # a leading ] is literal
                raise ValueError(f"unsupported class in {source!r}")
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


_HEX_CLASSES = _classes({"0123456789abcdefABCDEF": "h"})
_DURATION_CLASSES = _classes({"0123456789": "d", "numsh": "u"})  # digits, and the first letters of units
_DIGIT = ord("d")
_SCHEME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+.-"
_EMAIL_LOCAL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+-"
_ASCII_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _long_hex_ascii(text: str) -> str:
    """The long-hex form of `<HEX>`: a whole word of 8 or more hex digits with a digit and a letter among them.

    The original can only match a whole run of hex digits, from a word boundary to a word boundary, so the
    runs of 8 are found in the class string and then checked.
    """
    classes = text.encode("ascii").translate(_HEX_CLASSES)
    parts, last, pos = [], 0, 0
    while (start := classes.find(b"hhhhhhhh", pos)) != -1:
        end = classes.find(b" ", start + 8)
        end = len(text) if end == -1 else end
        pos = end
        run = text[start:end]
        bounded = not (start and text[start - 1] in _ASCII_WORD) and not (end < len(text) and text[end] in _ASCII_WORD)
        if bounded and not run.isdigit() and not run.isalpha():
            parts += (text[last:start], "<HEX>")
            last = end
    return "".join((*parts, text[last:])) if parts else text


def _duration_ascii(pattern: re.Pattern[str]) -> Pass:
    """`<DURATION>` from each digit that a unit's letter follows, which every match holds.

    A match ends at the first unit after its number, so matches come in the order of those places; for each,
    the original's leftmost start is the integer part of `1.5ms` when it starts a word, else `5ms`.
    """

    def apply(text: str) -> str:
        classes = text.encode("ascii").translate(_DURATION_CLASSES)
        parts, last, pos = [], 0, 0
        while (digit := classes.find(b"du", pos)) != -1:
            pos = digit + 1
            second = digit
            while second > last and classes[second - 1] == _DIGIT:
                second -= 1
            starts = [second]
            if second - 2 >= last and text[second - 1] == "." and classes[second - 2] == _DIGIT:
                first = second - 2
                while first > last and classes[first - 1] == _DIGIT:
                    first -= 1
                starts.insert(0, first)
            for start in starts:
                if (m := pattern.match(text, start)) is not None:
                    parts += (text[last:start], "<DURATION>")
                    last = pos = m.end()
                    break
        return "".join((*parts, text[last:])) if parts else text

    return apply


def _passes(flags: int) -> tuple[Pass, ...]:
    """The fast form of each rule, in the order of `RULES`."""

    def compiled(source: str) -> re.Pattern[str]:
        return re.compile(_spelled_ascii(source) if flags & re.ASCII else source, flags)

    ascii = bool(flags & re.ASCII)
    url, email = (compiled(source) for _, source in RULES[:2])
    duration = compiled(r"\d(?<!\w\d)\d*(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)\b")

    # `\d(?<!\w\d)` is `\b\d` that starts with a character class the engine can scan for.
    return (
        _gated(url, "://", "<URL>", run=_SCHEME_CHARS),
        _gated(email, "@", "<EMAIL>", run=_EMAIL_LOCAL_CHARS),
        # From the first `-`, 8 hex digits after the start.
        _anchored(
            compiled(r"-(?<=\b[0-9a-fA-F]{8}-)[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
            "<UUID>",
            lambda m: 8,
            8,
        ),
        # From the first `:`, 13 (2021-03-29T17:) or 11 (29/Mar/2021:) after the start; the two forms never
        # share a colon, and a later colon never gives an earlier start.
        _anchored(
            compiled(
                r":(?:(?<=\b\d{4}[-/]\d{2}[-/]\d{2}[T ]\d{2}:)(?P<iso>)\d{2}:\d{2}(?:[.,]\d+)?"
                r"(?:Z|[+-]\d{2}:?\d{2}|\s?UTC)?"
                r"|(?<=\b\d{2}/[A-Z][a-z]{2}/\d{4}:)\d{2}:\d{2}:\d{2}(?:\s[+-]\d{4})?)"
            ),
            "<TIMESTAMP>",
            lambda m: 13 if m.start("iso") >= 0 else 11,
            11,
        ),
        _anchored(compiled(r"[-/](?<=\b\d{4}[-/])\d{2}[-/]\d{2}\b"), "<DATE>", lambda m: 4, 4),
        _anchored(compiled(r":(?<=\b\d{2}:)\d{2}:\d{2}(?:[.,]\d+)?\b"), "<TIME>", lambda m: 2, 2),
        # From the first `.`: the first octet is the whole run of 1-3 digits before it.
        _anchored(
            compiled(
                r"\.(?:(?P<o1>(?<=\b\d\.))|(?P<o2>(?<=\b\d\d\.))|(?P<o3>(?<=\b\d\d\d\.)))"
                r"(?:\d{1,3}\.){2}\d{1,3}(?::\d{1,5})?\b"
            ),
            "<IP>",
            lambda m: int(m.lastgroup[1]),  # type: ignore[index]
            1,
        ),
        # `0x...` and long hex runs never overlap, so they are two scans; a long run is the whole word, and
        # its digit and its letter are looked for from its first character on.
        _substitute(compiled(r"0x(?<!\w0x)[0-9a-fA-F]+\b"), "<HEX>"),
        _long_hex_ascii
        if ascii
        else _substitute(
            compiled(
                r"[0-9a-fA-F](?<!\w[0-9a-fA-F])"
                r"(?:(?<=\d)(?=[0-9a-fA-F]*[a-fA-F])|(?<=[a-fA-F])(?=[0-9a-fA-F]*\d))[0-9a-fA-F]{7,}\b"
            ),
            "<HEX>",
        ),
        (_duration_ascii if ascii else _substitute_as("<DURATION>"))(duration),
        # A number is a whole run of [\w.] that reads `\d+(\.\d+)?`, with the sign before it when that sign
        # follows no [\w.]: the same read from either end. Backwards, the product of a version follows its
        # slash, so the exception is a lookahead, and the scan can start at a digit.
        _reversed(
            compiled(
                r"\d(?<![\w.]\d)(?:(?>\d*\.\d+(?![\w.])(?:[-+](?![\w.]))?)"
                r"(?!/(?>[A-Za-z0-9_]+)(?<=[A-Za-z])(?:[.\-](?>[A-Za-z0-9_]+)(?<=[A-Za-z]))*+(?![A-Za-z0-9_./\-]))"
                r"|(?>\d*(?![\w.])(?:[-+](?![\w.]))?))"
            ),
            "<NUM>",
        ),
    )


_ASCII_PASSES = _passes(re.ASCII)
_UNICODE_PASSES = _passes(0)


def _run(text: str, passes: tuple[Pass, ...]) -> str:
    for apply in passes:
        text = apply(text)
    return text


def mask_lines(messages: Iterable[str]) -> list[str]:
    """Each message with its variable values replaced by placeholders; the same as `mask` line by line."""
    lines = list(messages)
    joined = SEP.join(lines)
    if joined.isascii() and joined.count(SEP) == len(lines) - 1 and not _ASCII_UNSAFE.search(joined):
        return _run(joined, _ASCII_PASSES).split(SEP)  # the usual batch: one scan a rule
    out = list(lines)
    groups: dict[tuple[Pass, ...], list[int]] = {_ASCII_PASSES: [], _UNICODE_PASSES: []}
    for i, line in enumerate(lines):
        if SEP in line:
            out[i] = mask_reference(line)
        else:
            ascii_safe = line.isascii() and not _ASCII_UNSAFE.search(line)
            groups[_ASCII_PASSES if ascii_safe else _UNICODE_PASSES].append(i)
    for passes, group in groups.items():
        masked = _run(SEP.join([lines[i] for i in group]), passes).split(SEP) if group else []
        for i, line in zip(group, masked, strict=True):
            out[i] = line
    return out


def mask(message: str) -> str:
    """The message with its variable values replaced by placeholders."""
    return mask_lines((message,))[0]
