"""Masking of variable values in log messages before they become training data.

NuLog learns which tokens are constant in a message type. Values that are obviously variable (addresses,
ids, numbers, times) carry no information for that and would only bloat the vocabulary, so they are replaced
by placeholders such as `<IP>` or `<NUM>` first, as Opni's preprocessing does. The same function must be
applied to a line before it is scored by a model trained on masked data.
"""

from __future__ import annotations

import re

# Order matters: the wider patterns run first so that a URL is not taken apart into an IP and numbers.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("<URL>", re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")),
    ("<EMAIL>", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    (
        "<UUID>",
        re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
    ),
    (
        "<TIMESTAMP>",
        re.compile(
            r"\b\d{4}[-/]\d{2}[-/]\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2}|\s?UTC)?"
            r"|\b\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}(?:\s[+-]\d{4})?"
        ),
    ),
    ("<DATE>", re.compile(r"\b\d{4}[-/]\d{2}[-/]\d{2}\b")),
    ("<TIME>", re.compile(r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b")),
    ("<IP>", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b")),
    ("<HEX>", re.compile(r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b")),
    ("<DURATION>", re.compile(r"\b\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)\b")),
    ("<NUM>", re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.])")),
)


def mask(message: str) -> str:
    """The message with its variable values replaced by placeholders."""
    for placeholder, pattern in _RULES:
        message = pattern.sub(placeholder, message)
    return message
