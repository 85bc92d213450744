"""The suite-wide ban on unpickling is itself tested, so it cannot silently lapse."""

import pickle

import pytest
import torch

from tests.conftest import UnpicklingForbidden


def test_pickle_load_is_forbidden(tmp_path):
    with pytest.raises(UnpicklingForbidden):
        pickle.loads(b"\x80\x04K\x01.")
    with pytest.raises(UnpicklingForbidden):
        torch.load(tmp_path / "x.pt")
    with pytest.raises(UnpicklingForbidden), open(__file__, "rb") as f:
        pickle.Unpickler(f)
