"""Suite-wide guards and fixtures.

Nothing in loradex may ever unpickle (ARCHITECTURE.md invariants): ``pickle.load``/``loads``,
``pickle.Unpickler`` and ``torch.load`` raise for the whole session, so any code path that
tries fails its test.
"""

from __future__ import annotations

import pickle

import pytest

pytest_plugins = ["tests.catalog_fixtures"]


class UnpicklingForbidden(AssertionError):
    pass


def _forbidden(*_args, **_kwargs):
    raise UnpicklingForbidden("loradex must never unpickle (pickle.load / torch.load called)")


pickle.load = _forbidden
pickle.loads = _forbidden
pickle.Unpickler = _forbidden  # type: ignore[assignment, misc]
try:
    import torch

    torch.load = _forbidden
except ImportError:  # pragma: no cover - torch is part of the test install
    pass


