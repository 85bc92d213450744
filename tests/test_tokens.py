"""API tokens: shown once, stored hashed, verified, revoked; `loradex token` on the CLI."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.core.errors import NotFoundError
from hub.services.tokens import TokenService, UnauthorizedError, hash_token
from storage.catalog.tables import ApiToken
from tests.api_helpers import api_client, assert_error, auth, make_container
from tests.cli_helpers import cli


def test_create_verify_revoke_list(container):
    tokens = TokenService(container.catalog)
    new = tokens.create("ci")
    assert new.token.startswith("ldx_") and len(new.token) > 40
    assert tokens.verify(new.token).id == new.id
    other = tokens.create("")
    assert other.name == "default" and other.token != new.token

    for bad in (None, "", "ldx_wrong", "x" * 10_000):
        with pytest.raises(UnauthorizedError):
            tokens.verify(bad)

    revoked = tokens.revoke(new.id)
    assert revoked.revoked_at is not None
    assert tokens.revoke(new.id).revoked_at == revoked.revoked_at  # revoking twice is harmless
    with pytest.raises(UnauthorizedError, match="revoked"):
        tokens.verify(new.token)
    assert tokens.verify(other.token).id == other.id
    assert [(t.id, t.active) for t in tokens.list()] == [(new.id, False), (other.id, True)]
    with pytest.raises(NotFoundError):
        tokens.revoke(999_999)


def test_only_the_hash_is_stored(container):
    new = TokenService(container.catalog).create("ci")
    rows = container.catalog._read(
        lambda s: [(r.name, r.token_hash) for r in s.scalars(select(ApiToken))]
    )
    assert rows == [("ci", hash_token(new.token))]
    assert all(new.token not in value for row in rows for value in row)


def test_token_cli_create_ls_revoke_and_the_api_honours_it(tmp_path, catalog_url, monkeypatch):
    monkeypatch.setenv("LORADEX_DATABASE_URL", catalog_url)
    home = tmp_path / "home"
    created = cli(home, "token", "create", "--name", "ci", "--json")
    assert created.code == 0, created.stderr
    doc = created.json()
    assert {"id", "token"} <= doc.keys()
    listing = cli(home, "token", "ls", "--json").json()
    assert listing["count"] == 1 and "token" not in listing["data"][0]
    assert doc["token"] not in cli(home, "token", "ls").stdout

    c = make_container(home, catalog_url)
    with api_client(c) as client:
        r = client.delete("/adapters/missing", headers=auth(doc["token"]))
        assert_error(r, 404, "not_found")  # authenticated: got past the token check
        assert cli(home, "token", "revoke", str(doc["id"])).code == 0
        assert_error(client.delete("/adapters/missing", headers=auth(doc["token"])), 401)
    assert cli(home, "token", "revoke", "424242").code == 2
    c.catalog.close()
