"""Service-level fixtures shared by the API, job and token tests (registered in conftest)."""

from __future__ import annotations

import pytest

from tests.api_helpers import make_container, new_token


@pytest.fixture
def container(tmp_path, catalog_url):
    """A container over a fresh data dir, on SQLite and PostgreSQL (``catalog_url``)."""
    c = make_container(tmp_path / "home", catalog_url)
    yield c
    c.catalog.close()


@pytest.fixture
def token(container):
    return new_token(container)
