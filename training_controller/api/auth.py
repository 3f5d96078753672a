"""Bearer tokens of the REST API: who is asking, and whether they may write.

The tokens come from the setting `API_TOKENS` (a Secret in a cluster), each `NAME:ROLE:TOKEN` with ROLE
read-only or read-write (`config.parse_api_tokens`). A request's token is compared with every configured one
in constant time, through their sha256 digests, so neither a token's content nor its length leaks through
timing, and the loop never stops early. No token or an unknown one is 401 (with `WWW-Authenticate`), a
read-only token on a write 403. A token's secret never reaches a log line; its name does.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from training_controller.api.problems import Problem
from training_controller.config import ApiToken

REALM = 'Bearer realm="training-controller"'


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def new_token(name: str = "console", role: str = "rw") -> tuple[str, str]:
    """A fresh random token and its `API_TOKENS` entry: (secret, "NAME:ROLE:SECRET")."""
    secret = secrets.token_urlsafe(24)
    return secret, f"{name}:{role}:{secret}"


class Authenticator:
    """Tells a request's bearer token apart from the configured ones."""

    def __init__(self, tokens: tuple[ApiToken, ...]) -> None:
        self._tokens = [(t, _digest(t.secret.get_secret_value())) for t in tokens]

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    def identify(self, authorization: str | None) -> ApiToken:
        """The token of an `Authorization: Bearer ...` header; raises Problem 401 when there is none that fits."""
        if not self._tokens:
            raise Problem(401, "no API tokens are configured (setting API_TOKENS): the API is closed",
                          headers={"WWW-Authenticate": REALM})
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Problem(401, "this route needs a bearer token: send `Authorization: Bearer <token>`",
                          headers={"WWW-Authenticate": REALM})
        digest = _digest(given.strip())
        found: ApiToken | None = None
        for token, known in self._tokens:  # every token is compared, whichever matches
            if hmac.compare_digest(digest, known):
                found = token
        if found is None:
            raise Problem(401, "the bearer token is not valid",
                          headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
        return found

    @staticmethod
    def require_write(token: ApiToken, what: str) -> None:
        if not token.can_write:
            raise Problem(403, f"token {token.name} is read-only; {what} needs a read-write token")
