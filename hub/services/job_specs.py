"""What every job kind does the same way: parse a spec at the edge and report a published result.

A spec that fails its pydantic model is bad input (``invalid_spec``, HTTP 400 / exit 2) naming
each problem; a job whose work ends in a registered adapter version reports that version.

Adapter references are pinned at submit time to NAME@VERSION and, under ``PINNED_DIGESTS``, to
the digest that version had. NAME@VERSION names the same bytes only while that adapter exists:
deleted and registered again under the same name, it starts from version 1 with other weights.
``check_pins`` runs before every job, so a job that waited through that runs on nothing it was
not submitted with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, TypeAdapter, ValidationError

from hub.core.errors import BadInputError, ConflictError, NotFoundError
from hub.core.models import AdapterItem
from hub.core.names import AdapterRef
from hub.services.job_kinds import JobOutcome

if TYPE_CHECKING:
    from hub.services.container import Container

T = TypeVar("T")


def _finite_json(value: Any, path: str = "") -> Any:
    """``value`` unchanged when every number in it is finite. Python's JSON reader accepts
    NaN / Infinity tokens (and 1e999 overflows to inf), which are not JSON: a free-form dict
    holding one would be stored and serialised as null, so the job would run with a default
    instead of what was sent."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path or 'value'} is {value}: only finite numbers are valid JSON")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite_json(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _finite_json(item, f"{path}[{i}]")
    return value


# a free-form JSON object field of a job spec (method params): any keys, finite numbers only
JsonObject = Annotated[dict[str, Any], AfterValidator(_finite_json)]


def validation_problems(exc: ValidationError) -> str:
    """One line naming every field that failed and why (``loc.path: message; ...``)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def parse_job_spec(schema: type[T] | TypeAdapter[T], raw: Any, what: str) -> T:
    """``raw`` validated by ``schema`` (a model or a TypeAdapter), else ``invalid_spec``."""
    try:
        if isinstance(schema, TypeAdapter):
            return schema.validate_python(raw)
        assert issubclass(schema, BaseModel)
        return schema.model_validate(raw)  # type: ignore[return-value]
    except ValidationError as exc:
        raise BadInputError(
            f"invalid {what} request: {validation_problems(exc)}", code="invalid_spec"
        ) from None


def published(
    container: Container, item: AdapterItem, message: str, warnings: Sequence[str] = ()
) -> JobOutcome:
    """The outcome of a job that registered ``item``: ``message`` names it (``{ref}``); the
    registration's warnings follow it (a job has no stderr to print them on)."""
    version_id = container.catalog.version_id(item.name, item.version)
    text = message.format(ref=f"{item.name}@{item.version}")
    return JobOutcome(version_id, "".join([text, *(f"; warning: {w}" for w in warnings)]))


PINNED_DIGESTS = "pinned_digests"  # spec key: {"NAME@VERSION": sha256} of the pinned inputs


def with_pins(spec: dict[str, Any], inputs: Sequence[AdapterItem]) -> dict[str, Any]:
    """``spec`` plus the digest of each input version, as validated at submit time."""
    return {**spec, PINNED_DIGESTS: {f"{i.name}@{i.version}": i.digest for i in inputs}}


def check_pins(container: Container, spec: dict[str, Any]) -> None:
    """Refuse to run when a pinned input is gone or is no longer the adapter it was at submit
    time. Specs stored before pins existed carry none and are not checked."""
    for label, digest in (spec.get(PINNED_DIGESTS) or {}).items():
        ref = AdapterRef.parse(label)
        now = container.registry.current_digest(ref.name, ref.version)
        if now is None:
            raise NotFoundError(
                f"{label} was deleted after this job was submitted; register it again and "
                "resubmit the job",
                code="input_deleted",
            )
        if now != digest:
            raise ConflictError(
                f"{label} is not the adapter this job was submitted with (digest {now[:12]}…, "
                f"was {digest[:12]}…): it was deleted and its name registered again; resubmit "
                "the job to use the new one",
                code="input_changed",
            )
