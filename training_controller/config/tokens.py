"""The bearer tokens of the REST API and the console (`API_TOKENS`): parsed here, checked when the settings
load, and never echoed (a token is a secret)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Literal

from pydantic import SecretStr

TokenRole = Literal["read-only", "read-write"]
_ROLES: dict[str, TokenRole] = {"ro": "read-only", "read-only": "read-only", "rw": "read-write", "read-write": "read-write"}
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class ApiToken:
    """One bearer token of the REST API and the console: a name for the logs, a role, the secret itself."""

    name: str
    role: TokenRole
    secret: SecretStr = dataclass_field(repr=False)

    @property
    def can_write(self) -> bool:
        return self.role == "read-write"


def parse_api_tokens(text: str) -> tuple[ApiToken, ...]:
    """`API_TOKENS`: entries `NAME:ROLE:TOKEN` separated by commas or white space, ROLE `ro` (read-only) or
    `rw` (read-write), TOKEN at least 16 characters. Errors name the entry by its position, never its text."""
    tokens: list[ApiToken] = []
    entries = [e for e in re.split(r"[\s,]+", text.strip()) if e]
    for n, entry in enumerate(entries, start=1):
        name, _, rest = entry.partition(":")
        role, _, secret = rest.partition(":")
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ValueError(f"entry {n}: expected NAME:ROLE:TOKEN with a NAME of letters, digits, '_', '.' or '-'")
        if role not in _ROLES:
            raise ValueError(f"entry {n} ({name}): the role must be ro (read-only) or rw (read-write)")
        if len(secret) < MIN_TOKEN_CHARS or any(c in secret for c in ":\"'"):
            raise ValueError(f"entry {n} ({name}): the token must be at least {MIN_TOKEN_CHARS} characters, without ':' or quotes")
        if any(t.name == name for t in tokens):
            raise ValueError(f"entry {n}: the name {name} is used twice")
        tokens.append(ApiToken(name=name, role=_ROLES[role], secret=SecretStr(secret)))
    return tuple(tokens)
