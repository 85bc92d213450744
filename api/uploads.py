"""Multipart adapter uploads, read with the size limit enforced while the body streams in.

The declared Content-Length is checked first; the byte count is then enforced on the stream
itself, so a chunked or lying client is cut off at the limit instead of filling the disk.
python-multipart spools file parts to temporary files (not memory) past 1 MiB.

A form field this endpoint does not know, or a single-valued one sent twice, is refused by name
rather than dropped: a misspelt ``descripton`` would otherwise register an adapter without its
description. An optional ``sha256`` (the client's digest of the weights file) is checked against
the bytes that arrived, as OCI registries check a pushed blob's digest; a mismatch stores nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message, Receive

from api.errors import PayloadTooLargeError
from hub.core.errors import BadInputError, InvalidAdapterError
from hub.core.models import AdapterMeta

CONFIG_FIELD = "adapter_config.json"
WEIGHTS_FIELD = "adapter_model.safetensors"
TEXT_FIELDS = ("name", "description", "license", "base_model", "sha256")
KNOWN_FIELDS = (*TEXT_FIELDS, "tags", CONFIG_FIELD, WEIGHTS_FIELD)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")  # either case: Windows' Get-FileHash prints upper


@dataclass
class Upload:
    meta: AdapterMeta
    config_bytes: bytes
    weights_bytes: bytes
    base_model: str | None = None


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"upload is over the {limit}-byte limit", limit=limit)


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
        return message

    return wrapped


async def read_upload(request: Request, limit: int) -> Upload:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadInputError("upload must be multipart/form-data", code="invalid_request")
    limited = Request(request.scope, _limited(request.receive, limit))
    try:
        form = await limited.form(max_files=2, max_fields=32)
    except HTTPException as exc:  # malformed multipart
        raise BadInputError(
            f"malformed multipart body: {exc.detail}", code="invalid_request"
        ) from None
    try:
        return await _parse(form)
    finally:
        await form.close()


def _text(form: FormData, key: str) -> str | None:
    value = form.get(key)
    if value is not None and not isinstance(value, str):
        raise BadInputError(f"form field {key!r} must be text, not a file", code="invalid_request")
    if value is not None and "\x00" in value:  # PostgreSQL text cannot hold NUL
        raise BadInputError(f"form field {key!r} contains a NUL byte", code="invalid_request")
    return value


async def _file(form: FormData, key: str, missing_code: str) -> bytes:
    value = form.get(key)
    if not isinstance(value, UploadFile):
        raise InvalidAdapterError(f"the upload has no {key} file part", code=missing_code)
    return await value.read()


def _check_fields(form: FormData) -> None:
    for key in dict.fromkeys(form.keys()):
        if key not in KNOWN_FIELDS:
            raise BadInputError(
                f"unknown form field {key!r}; the fields are {', '.join(KNOWN_FIELDS)}",
                code="invalid_request",
            )
        if key != "tags" and len(form.getlist(key)) > 1:
            raise BadInputError(
                f"form field {key!r} is sent more than once", code="invalid_request"
            )


def _check_digest(claimed: str | None, weights: bytes) -> None:
    if claimed is None:
        return
    if not _SHA256.fullmatch(claimed):
        raise BadInputError(
            f"form field 'sha256' must be 64 hex digits, got {claimed[:80]!r}",
            code="invalid_request",
        )
    actual = hashlib.sha256(weights).hexdigest()
    if actual != claimed.lower():
        raise BadInputError(
            f"{WEIGHTS_FIELD} arrived with sha256 {actual}, not the {claimed} sent with it "
            "(damaged or truncated in transit?); nothing was stored",
            code="digest_mismatch",
        )


async def _parse(form: FormData) -> Upload:
    _check_fields(form)
    texts = {k: _text(form, k) for k in TEXT_FIELDS}
    if not texts["name"]:
        raise BadInputError("form field 'name' is required", code="invalid_request")
    tags = [t for raw in form.getlist("tags") if isinstance(raw, str) for t in raw.split(",")]
    meta = AdapterMeta(
        name=texts["name"],
        description=texts["description"] or "",
        tags=[t for t in tags if t.strip()],
        license=texts["license"] or None,
    )
    config = await _file(form, CONFIG_FIELD, "config_missing")
    weights = await _file(form, WEIGHTS_FIELD, "weights_missing")
    _check_digest(texts["sha256"], weights)
    return Upload(meta, config, weights, base_model=texts["base_model"] or None)
