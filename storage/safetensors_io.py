"""Strict pure-Python safetensors reader/validator and deterministic writer.

Why our own parser: uploads are hostile. We validate every byte count *before* trusting it (no
allocation or read is sized by an unchecked length), refuse pickles/zips by content rather than
by extension, detect duplicate JSON keys (the reference library does not), allow only the dtypes
a LoRA adapter needs, and give each defect a stable code from ``SAFETENSORS_CODES``.
Tensors come back as read-only numpy views over the input bytes (BF16 is widened to float32),
so memory stays bounded by the file size.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from hub.core.errors import InvalidAdapterError, InvalidSafetensorsError, PickleRefusedError
from hub.core.json_input import JSON_ERRORS, unique_keys

# Wire dtype -> (numpy dtype of the stored bytes, item size).
_WIRE: dict[str, tuple[str, int]] = {"F16": ("<f2", 2), "BF16": ("<u2", 2), "F32": ("<f4", 4)}
ALLOWED_DTYPES = frozenset(_WIRE)
# Far beyond any adapter (a 70B r64 all-linear adapter is ~2 GB) yet small enough that products
# and offsets never approach the range where other parsers overflow.
MAX_TENSOR_BYTES = 1 << 40
MAX_OFFSET = 1 << 53
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_METADATA_KEY = "__metadata__"


@dataclass(frozen=True)
class SafetensorsFile:
    """A validated safetensors payload. ``dtypes`` keeps the wire dtype (``BF16`` decodes to
    float32 in ``tensors``)."""

    tensors: dict[str, np.ndarray]
    dtypes: dict[str, str]
    metadata: dict[str, str]


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _fail(code: str, message: str) -> NoReturn:
    raise InvalidSafetensorsError(message, code=code)


# ---------------------------------------------------------------- format sniffing


def _sniff_foreign(data: bytes) -> None:
    """Refuse well-known non-safetensors formats by their magic bytes. Only called when the
    prefix is not a plausible safetensors header, because a valid header length can itself
    start with 0x80 (e.g. N = 0x0280)."""
    head = data[:4096]
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise PickleRefusedError(
            "content is a Python pickle (protocol >= 2); pickles can execute code on load and "
            "are never read. Convert the weights to safetensors in a trusted environment.",
            code="pickle_refused",
        )
    if head[:4] == b"PK\x03\x04":
        if b".pkl" in head or b"data/" in head or b"version" in head:
            raise PickleRefusedError(
                "content is a PyTorch zip checkpoint (it embeds a pickle); it is never loaded. "
                "Convert it to safetensors (safetensors.torch.save_file) in a trusted "
                "environment.",
                code="pickle_refused",
            )
        _fail("safetensors_not_safetensors", "content is a zip archive, not safetensors")
    if _looks_like_protocol0_pickle(head):
        raise PickleRefusedError(
            "content looks like a Python pickle (protocol 0/1); it is never loaded. Convert "
            "the weights to safetensors in a trusted environment.",
            code="pickle_refused",
        )
    for magic, name in _FOREIGN_MAGIC:
        if head.startswith(magic):
            _fail("safetensors_not_safetensors", f"content is {name}, not safetensors")


_FOREIGN_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GGUF", "a GGUF model file"),
    (b"\x93NUMPY", "a numpy .npy file (which may embed pickles)"),
    (b"\x1f\x8b", "gzip data"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x7fELF", "an ELF executable"),
)


_PROTO01_STARTS = (b"(dp", b"(lp", b"}q\x00", b"]q\x00", b"}r\x00")
_PROTO0_GLOBAL = re.compile(rb"c[A-Za-z_][\w.]*\n[A-Za-z_][\w.]*\n")


def _looks_like_protocol0_pickle(head: bytes) -> bool:
    # Protocol 0/1 pickles usually open with GLOBAL ("c<module>\n<name>\n") or with
    # MARK/EMPTY_DICT/EMPTY_LIST + a memo PUT; either is a strong signal without parsing.
    return bool(_PROTO0_GLOBAL.match(head)) or head[:3] in _PROTO01_STARTS


# ---------------------------------------------------------------- header


def _header_bounds(data: bytes, max_header_bytes: int) -> int:
    """Return the checked header length N; nothing is read past ``data[8 + N]``."""
    n = struct.unpack_from("<Q", data, 0)[0] if len(data) >= 8 else None
    plausible = n is not None and n <= max_header_bytes and 8 + n <= len(data)
    if not plausible or data[8:9] != b"{":
        _sniff_foreign(data)
    if n is None:
        _fail("safetensors_truncated", f"file has {len(data)} bytes, fewer than the 8-byte prefix")
    if n > max_header_bytes:
        _fail("safetensors_header_too_large", f"header length {n} exceeds {max_header_bytes}")
    if 8 + n > len(data):
        _fail(
            "safetensors_header_too_large",
            f"header length {n} runs past the end of the {len(data)}-byte file",
        )
    return n


def _repeated_key(key: str) -> NoReturn:
    _fail("safetensors_duplicate_key", f"header repeats key {key!r}")


_no_duplicates = unique_keys(_repeated_key)


def _reject_constant(name: str) -> NoReturn:
    _fail("safetensors_header_not_json", f"header uses non-standard JSON constant {name}")


def _decode_header(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail("safetensors_header_not_utf8", f"header is not UTF-8 at byte {exc.start}")
    try:
        parsed = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except InvalidSafetensorsError:
        raise
    except JSON_ERRORS as exc:  # JSONDecodeError, int digit limit, deep nesting
        _fail("safetensors_header_not_json", f"header is not valid JSON: {str(exc)[:200]}")
    if not isinstance(parsed, dict):
        _fail("safetensors_header_not_object", f"header is a JSON {type(parsed).__name__}")
    return parsed


def _check_metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        _fail("safetensors_bad_metadata", "__metadata__ must be an object of string values")
    return dict(value)


def _is_int(value: Any) -> bool:
    # JSON true/false become Python bools, which are ints: refuse them explicitly.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        _fail("safetensors_bad_shape", f"tensor {name!r}: shape {str(shape)[:80]} is invalid")
    return tuple(shape)


def _nbytes(name: str, shape: tuple[int, ...], itemsize: int) -> int:
    total = itemsize
    for dim in shape:
        # Cap every factor too, so [0, 2**100] is refused like the reference parser would.
        if dim > MAX_TENSOR_BYTES:
            _fail("safetensors_overflow", f"tensor {name!r}: dimension {dim} is too large")
        total *= dim
        if total > MAX_TENSOR_BYTES:
            _fail("safetensors_overflow", f"tensor {name!r}: shape {list(shape)} is too large")
    return total


def _check_offsets(name: str, offsets: Any) -> tuple[int, int]:
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_int, offsets)):
        _fail("safetensors_bad_entry", f"tensor {name!r}: data_offsets must be two integers")
    begin, end = offsets
    if begin > MAX_OFFSET or end > MAX_OFFSET:
        _fail("safetensors_overflow", f"tensor {name!r}: offsets {offsets} overflow")
    if begin < 0 or end < 0 or begin > end:
        _fail("safetensors_offsets_invalid", f"tensor {name!r}: offsets {offsets} are invalid")
    return begin, end


def _check_entry(name: str, entry: Any) -> _Entry:
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        _fail(
            "safetensors_bad_entry",
            f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets (got {keys})",
        )
    dtype = entry["dtype"]
    if not isinstance(dtype, str):
        _fail("safetensors_bad_entry", f"tensor {name!r}: dtype must be a string")
    if dtype not in _WIRE:
        _fail(
            "safetensors_bad_dtype",
            f"tensor {name!r}: dtype {dtype[:20]!r} not allowed (F16, BF16, F32)",
        )
    shape = _check_shape(name, entry["shape"])
    nbytes = _nbytes(name, shape, _WIRE[dtype][1])
    begin, end = _check_offsets(name, entry["data_offsets"])
    if end - begin != nbytes:
        _fail(
            "safetensors_size_mismatch",
            f"tensor {name!r}: {end - begin} bytes but {dtype} x {list(shape)} needs {nbytes}",
        )
    return _Entry(name, dtype, shape, begin, end)


def _check_layout(entries: list[_Entry], data_len: int) -> None:
    """Sorted by offsets, tensors must tile [0, data_len) exactly."""
    cursor = 0
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != cursor:
            kind = "overlaps the previous tensor" if e.begin < cursor else "leaves a gap"
            _fail("safetensors_offsets_invalid", f"tensor {e.name!r} at {e.begin} {kind}")
        cursor = e.end
    if cursor > data_len:
        _fail("safetensors_truncated", f"tensors need {cursor} data bytes, file has {data_len}")
    if cursor < data_len:
        _fail("safetensors_trailing_bytes", f"{data_len - cursor} bytes after the last tensor")


def _decode(data: bytes, base: int, e: _Entry) -> np.ndarray:
    wire, size = _WIRE[e.dtype]
    count = (e.end - e.begin) // size
    flat = np.frombuffer(data, dtype=wire, count=count, offset=base + e.begin)
    if e.dtype == "BF16":
        # bf16 is the top half of an IEEE float32: widen by a 16-bit shift, exactly. Shift the
        # 1-D array (a 0-d one would decay to a numpy scalar).
        flat = (flat.astype(np.uint32) << 16).view(np.float32)
        flat.flags.writeable = False
    return flat.reshape(e.shape)


def parse_safetensors(
    data: bytes, *, max_header_bytes: int = 1 << 20, max_tensors: int = 10_000
) -> SafetensorsFile:
    """Validate ``data`` completely and return its tensors; raise on the first defect."""
    data = bytes(data)  # a bytes object is immutable, so the numpy views are read-only
    n = _header_bounds(data, max_header_bytes)
    header = _decode_header(data[8 : 8 + n])
    metadata = _check_metadata(header.pop(_METADATA_KEY)) if _METADATA_KEY in header else {}
    if len(header) > max_tensors:
        _fail("safetensors_too_many_tensors", f"{len(header)} tensors exceed {max_tensors}")
    entries = [_check_entry(name, entry) for name, entry in header.items()]
    _check_layout(entries, len(data) - 8 - n)
    tensors = {e.name: _decode(data, 8 + n, e) for e in entries}
    return SafetensorsFile(tensors, {e.name: e.dtype for e in entries}, metadata)


# ---------------------------------------------------------------- writing


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest, ties to even); return the uint16 bit patterns."""
    bits = np.ascontiguousarray(x, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    # Rounding a NaN payload could carry into the exponent and make it Inf: keep NaN a NaN.
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    if nan.any():
        sign = ((bits >> 16) & 0x8000).astype("<u2")
        rounded = np.where(nan, sign | np.uint16(0x7FC0), rounded).astype("<u2")
    return rounded


def _wire_dtype(name: str, array: np.ndarray, wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in _WIRE:
            _fail("safetensors_bad_dtype", f"tensor {name!r}: cannot write dtype {wanted!r}")
        return wanted
    if array.dtype == np.float16:
        return "F16"
    if array.dtype == np.float32:
        return "F32"
    _fail(
        "safetensors_bad_dtype",
        f"tensor {name!r}: numpy {array.dtype} has no allowed dtype; pass dtypes={{...}}",
    )


def _encode(array: np.ndarray, dtype: str) -> bytes:
    if dtype == "BF16":
        return float32_to_bf16_bits(array).tobytes()
    return np.ascontiguousarray(array, dtype=_WIRE[dtype][0]).tobytes()


def serialize_safetensors(
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
    dtypes: Mapping[str, str] | None = None,
) -> bytes:
    """Deterministic safetensors bytes: names sorted, data in name order, header padded with
    spaces to an 8-byte boundary (what the reference writer does)."""
    dtypes = dtypes or {}
    header: dict[str, Any] = {}
    if metadata:
        header[_METADATA_KEY] = {str(k): str(v) for k, v in sorted(metadata.items())}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        dtype = _wire_dtype(name, array, dtypes.get(name))
        blob = _encode(array, dtype)
        header[name] = {
            "dtype": dtype,
            "shape": [int(d) for d in array.shape],
            "data_offsets": [offset, offset + len(blob)],
        }
        chunks.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def check_finite(tensors: Mapping[str, np.ndarray]) -> None:
    """Raise ``weights_not_finite`` naming the first (by name) tensor with a NaN or Inf."""
    for name in sorted(tensors):
        array = tensors[name]
        if array.size and not np.isfinite(array).all():
            kind = "NaN" if np.isnan(array).any() else "Inf"
            raise InvalidAdapterError(
                f"tensor {name!r} contains {kind} values", code="weights_not_finite", tensor=name
            )
