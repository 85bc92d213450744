"""Suite-wide guards and fixtures.

Nothing in loradex may ever unpickle (ARCHITECTURE.md invariants): ``pickle.load``/``loads``,
``pickle.Unpickler`` and ``torch.load`` raise for the whole session, so any code path that
tries fails its test.
"""

from __future__ import annotations

import pickle

pytest_plugins = ["tests.catalog_fixtures", "tests.model_fixtures", "tests.api_fixtures"]
pytest_plugins += ["tests.hf_fixtures"]  # Hugging Face Hub sync: fake Hub on loopback


class UnpicklingForbidden(AssertionError):
    pass


def _forbidden(*_args, **_kwargs):
    raise UnpicklingForbidden("loradex must never unpickle (pickle.load / torch.load called)")


pickle.load = _forbidden
pickle.loads = _forbidden


class _ForbiddenUnpickler(pickle.Unpickler):
    """Still subclassable (torch defines subclasses at import), but never constructible."""

    def __init__(self, *args, **kwargs):
        _forbidden()


pickle.Unpickler = _ForbiddenUnpickler  # type: ignore[misc]
try:
    import torch

    torch.load = _forbidden
except ImportError:  # pragma: no cover - torch is part of the test install
    pass
