"""API bearer tokens: create (shown once), verify, revoke, list.

Only the sha256 of a token is stored. Tokens carry 256 random bits, so a plain hash (no salt,
no slow KDF) is enough: nobody can brute-force the preimage, and the hash is a unique key that
verification looks up directly.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from hub.core.errors import BadInputError, HubError
from storage.catalog import Catalog
from storage.catalog.tokens import TokenRecord

TOKEN_PREFIX = "ldx_"  # recognisable in logs and by secret scanners
MAX_TOKEN_CHARS = 256


class UnauthorizedError(HubError):
    """A request lacks a valid bearer token (REST: 401)."""

    code = "unauthorized"
    kind = "bad_input"


@dataclass(frozen=True)
class NewToken:
    id: int
    name: str
    token: str  # the only time the plain token exists outside the client


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenService:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def create(self, name: str = "default") -> NewToken:
        name = name.strip() or "default"
        if len(name) > 128:
            raise BadInputError("token name is over 128 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = self.catalog.create_token(name, hash_token(token))
        return NewToken(record.id, record.name, token)

    def verify(self, token: str | None) -> TokenRecord:
        """The token's record, or UnauthorizedError for a missing, unknown or revoked token."""
        if not token:
            raise UnauthorizedError("a bearer token is required (loradex token create)")
        if len(token) > MAX_TOKEN_CHARS:
            raise UnauthorizedError("invalid token")
        record = self.catalog.find_token(hash_token(token))
        if record is None:
            raise UnauthorizedError("invalid token")
        if not record.active:
            raise UnauthorizedError("token has been revoked", token_id=record.id)
        return record

    def revoke(self, token_id: int) -> TokenRecord:
        return self.catalog.revoke_token(token_id)

    def list(self) -> list[TokenRecord]:
        return self.catalog.list_tokens()


__all__ = ["NewToken", "TokenRecord", "TokenService", "UnauthorizedError", "hash_token"]
