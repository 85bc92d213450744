"""schemathesis against the OpenAPI spec, in-process over ASGI: no 5xx, responses conform to
the schema, and every error comes in the one JSON error shape. Bounded: ~25 generated cases per
operation (~400 in all).

The app is built at import time because schemathesis parametrizes at collection; its data dir is
a temp dir removed at exit. (``schemathesis.pytest.from_fixture`` would avoid that, but it does
not work with pytest 9.)
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api import create_app
from tests.api_helpers import ERROR_KEYS, api_client, auth, make_container, new_token, seed_adapters

_HOME = Path(tempfile.mkdtemp(prefix="loradex-fuzz-"))
atexit.register(shutil.rmtree, _HOME, True)
CONTAINER = make_container(_HOME / "home", upload_max_bytes=64 << 10)
TOKEN = new_token(CONTAINER)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(CONTAINER, run_jobs=False))


@pytest.fixture(scope="module", autouse=True)
def _seeded():
    with api_client(CONTAINER, run_jobs=False) as client:
        seed_adapters(client, TOKEN, _HOME, ["a", "b"])
    yield
    CONTAINER.catalog.close()


SEMANTIC = {"/adapters", "/merges", "/mixtures", "/transfers"}
SEMANTIC |= {"/sync"}  # Hub repo-id rules ("--", ".."), a pull needs repos or a filter
SEMANTIC |= {"/generations"}  # a generation needs described experts and a trained generator
# Search answers depend on state a schema cannot express (a trained encoder for weight mode and
# `similar`, a non-blank query): a schema-valid request may rightly get a 400 naming the reason.
STATEFUL_READS = {"/search", "/adapters/{name}/similar"}


def error_shape(ctx, response, case):
    """Every 4xx/5xx is ``{"error": {"code", "message", "details"}}``."""
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == ERROR_KEYS, body
        assert isinstance(body["error"]["code"], str) and body["error"]["code"]


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_openapi_spec(case):
    # Uploads and merges carry content a schema cannot describe (safetensors bytes, a merge
    # method's name and params): a schema-valid body may rightly get a 400 naming the defect.
    semantic = (
        case.operation.method.upper() == "POST" and case.operation.path in SEMANTIC
    ) or case.operation.path in STATEFUL_READS
    case.call_and_validate(
        headers=auth(TOKEN),
        additional_checks=[error_shape],
        excluded_checks=[positive_data_acceptance] if semantic else [],
    )
