"""API tokens: the catalog keeps only each token's sha256, never the token itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.core.errors import NotFoundError
from storage.catalog.base import CatalogBase, as_utc, aware_utc
from storage.catalog.tables import ApiToken, utcnow


@dataclass(frozen=True)
class TokenRecord:
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _to_record(row: ApiToken) -> TokenRecord:
    return TokenRecord(row.id, row.name, aware_utc(row.created_at), as_utc(row.revoked_at))


class TokensMixin(CatalogBase):
    def create_token(self, name: str, token_hash: str) -> TokenRecord:
        def run(s: Session) -> TokenRecord:
            row = ApiToken(name=name, token_hash=token_hash)
            s.add(row)
            s.flush()
            return _to_record(row)

        return self._write(run, what="create_token")

    def find_token(self, token_hash: str) -> TokenRecord | None:
        def run(s: Session) -> TokenRecord | None:
            row = s.scalars(select(ApiToken).where(ApiToken.token_hash == token_hash)).first()
            return None if row is None else _to_record(row)

        return self._read(run)

    def revoke_token(self, token_id: int) -> TokenRecord:
        """Stamp ``revoked_at`` (once: revoking twice keeps the first time)."""

        def run(s: Session) -> TokenRecord:
            row = s.get(ApiToken, token_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"token {token_id} not found", token_id=token_id)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            s.flush()
            return _to_record(row)

        return self._write(run, what="revoke_token")

    def list_tokens(self) -> list[TokenRecord]:
        return self._read(
            lambda s: [_to_record(r) for r in s.scalars(select(ApiToken).order_by(ApiToken.id))]
        )
