"""REST bodies and job specs refuse a JSON value of the wrong kind instead of coercing it.

pydantic's lax mode reads `true` as 1, `"300"` as 300 and `"yes"` as true; a client sending
them has a bug it should hear about (422), as `params` already refused. JSON Schema counts
`7.0` as an integer, so a number field still takes it (the OpenAPI fuzz test sends such values).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from generation.translora.params import TransferParams
from hub.services.generation_jobs import GenerationRequest
from hub.services.merge_jobs import MergeJobSpec
from hub.services.mixture_jobs import MixtureJobSpec
from hub.services.sync_jobs import SyncPull, SyncPush


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (MixtureJobSpec, "steps", "300"),
        (MixtureJobSpec, "batch", True),
        (MixtureJobSpec, "depth", True),
        (MixtureJobSpec, "layerwise", "yes"),
        (MixtureJobSpec, "layerwise", 1),
        (GenerationRequest, "rank", True),
        (GenerationRequest, "samples", "3"),
        (GenerationRequest, "k", True),
        (TransferParams, "seeds", True),
        (TransferParams, "steps", "10"),
        (TransferParams, "lr", "0.001"),
        (SyncPull, "limit", "5"),
        (SyncPull, "dry_run", "true"),
        (SyncPush, "private", "yes"),
        (MergeJobSpec, "seed", False),
    ],
)
def test_a_value_of_the_wrong_json_kind_is_refused_by_name(model, field, value):
    with pytest.raises(ValidationError) as err:
        model.model_validate({field: value})
    assert field in str(err.value) and repr(value) in str(err.value)


def test_a_whole_number_written_as_a_float_is_still_an_integer():
    assert TransferParams.model_validate({"steps": 10.0, "seeds": 3.0}).steps == 10
    with pytest.raises(ValidationError):
        TransferParams.model_validate({"steps": 10.5})
