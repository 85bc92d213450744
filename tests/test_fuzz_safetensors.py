"""Property-based fuzzing of the safetensors parser (PERF-RELIABILITY B3).

Two strategies, 5,000 examples each (10,000 per default run): arbitrary bytes, and structured
mutations of valid files (lengths, offsets, dtypes, shapes, duplicate keys, unicode names,
metadata, trailing/truncated data). Properties: only ``HubError`` subclasses escape, each parse
is fast, and whatever we accept the reference library reads to the same values.
"""

from __future__ import annotations

import gc
import json
import struct
import time
import tracemalloc
from typing import Any

import numpy as np
import pytest
import safetensors.numpy as st_numpy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hub.core.errors import HubError
from storage.safetensors_io import parse_safetensors

FUZZ = settings(
    max_examples=5000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
# A hang detector: CPU seconds of the parsing thread per parse. Wall time would count the other
# jobs sharing the machine's 2 cores, and process time counts every thread of this pytest process
# (thread pools and servers left by earlier tests: one CI run charged a parse 0.9 s that way). The
# cyclic garbage collector is paused during the parse so a full collection of objects left by
# earlier tests is not billed to it. Typical parses take well under a millisecond.
MAX_SECONDS = 0.5


def _parse_or_reject(data: bytes, *, record: bool = True) -> Any:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    start = time.thread_time()
    try:
        result = parse_safetensors(data)
    except HubError as exc:
        assert exc.code, "every rejection carries a code"
        result = None
        if record:
            event(f"rejected: {exc.code}")
    else:
        if record:
            event("accepted")
    finally:
        seconds = time.thread_time() - start
        if gc_was_enabled:
            gc.enable()
    assert seconds < MAX_SECONDS
    return result


def _agrees_with_reference(data: bytes, parsed: Any) -> None:
    """Anything we accept must be a file the reference reader accepts with equal values."""
    if parsed is None or "BF16" in parsed.dtypes.values():
        return  # safetensors.numpy cannot represent bfloat16
    reference = st_numpy.load(data)
    assert reference.keys() == parsed.tensors.keys()
    for name, array in parsed.tensors.items():
        np.testing.assert_array_equal(reference[name], array)


# ---------------------------------------------------------------- random bytes


prefix_lengths = st.one_of(
    st.integers(0, 64), st.integers(0, 2**64 - 1), st.sampled_from([2**63, 2**32, 1 << 20])
)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=256),
        st.tuples(prefix_lengths, st.binary(max_size=256)).map(
            lambda t: struct.pack("<Q", t[0]) + t[1]
        ),
        # a consistent length prefix and "{", so the bytes reach the JSON/entry checks
        st.tuples(st.integers(-2, 2), st.binary(max_size=128)).map(
            lambda t: struct.pack("<Q", max(len(t[1]) + 1 + t[0], 0)) + b"{" + t[1]
        ),
    )
)
def test_random_bytes_never_crash(data: bytes) -> None:
    _parse_or_reject(data)


# ---------------------------------------------------------------- mutated valid files

names = st.text(min_size=0, max_size=12)  # unicode, including surrogate-free oddities
dtypes = st.sampled_from(["F16", "BF16", "F32"])
weird_dtypes = st.one_of(
    dtypes, st.sampled_from(["F64", "I8", "U8", "BOOL", "f16", "", "F16 "]), st.integers()
)
weird_ints = st.one_of(
    st.integers(-4, 64),
    st.sampled_from([2**31, 2**32, 2**40, 2**53, 2**63, 2**64, 2**70, -(2**63)]),
)
weird_values = st.one_of(
    weird_ints, st.booleans(), st.floats(allow_nan=False), st.text(max_size=3), st.none()
)


@st.composite
def valid_layout(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A consistent header (without __metadata__) and its data length."""
    header: dict[str, Any] = {}
    offset = 0
    for name in draw(st.lists(names, max_size=5, unique=True)):
        if name == "__metadata__":
            continue
        dtype = draw(dtypes)
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = int(np.prod(shape, dtype=np.int64)) * (4 if dtype == "F32" else 2)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    return header, offset


def _mutate_entry(draw: st.DrawFn, entry: dict[str, Any]) -> None:
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "drop", "extra", "type"]))
    if field == "dtype":
        entry["dtype"] = draw(weird_dtypes)
    elif field == "shape":
        entry["shape"] = draw(st.one_of(st.lists(weird_values, max_size=4), weird_values))
    elif field == "data_offsets":
        entry["data_offsets"] = draw(st.lists(weird_ints, min_size=0, max_size=3))
    elif field == "drop":
        entry.pop(draw(st.sampled_from(sorted(entry))), None)
    elif field == "extra":
        entry[draw(names)] = draw(weird_values)
    else:
        entry.clear()
        entry["dtype"] = [draw(weird_values)]


MUTATIONS = ["entry", "metadata", "duplicate", "padding", "length", "trailing", "cut"]


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    """A valid file with zero to three mutations (zero keeps accepted files in the mix)."""
    header, data_len = draw(valid_layout())
    kinds = draw(st.sets(st.sampled_from(MUTATIONS), max_size=3))
    if "entry" in kinds and header:
        for name in draw(st.lists(st.sampled_from(sorted(header)), min_size=1, max_size=3)):
            _mutate_entry(draw, header[name])
    meta = st.one_of(st.dictionaries(names, names, max_size=3), weird_values,
                     st.dictionaries(names, weird_values, min_size=1, max_size=2))  # fmt: skip
    if "metadata" in kinds or draw(st.booleans()):
        header["__metadata__"] = draw(meta if "metadata" in kinds else meta.branches[0])
    text = json.dumps(header, ensure_ascii=draw(st.booleans())).encode("utf-8")
    if "duplicate" in kinds and header:  # repeat the first key by splicing the JSON
        first = json.dumps({next(iter(header)): next(iter(header.values()))})[1:-1]
        text = b"{" + first.encode() + b"," + text[1:]
    text += b" " * (-len(text) % 8 if "padding" not in kinds else draw(st.integers(0, 9)))
    declared = len(text)
    if "length" in kinds:
        declared += draw(st.sampled_from([-1, 1, 8, 2**32, -len(text), 1 << 21]))
    data = draw(st.binary(min_size=data_len, max_size=data_len))
    if "trailing" in kinds:
        data += draw(st.binary(min_size=1, max_size=16))
    blob = struct.pack("<Q", max(declared, 0)) + text + data
    return blob[: -draw(st.integers(1, 16))] if "cut" in kinds else blob


@FUZZ
@given(mutated_files())
def test_mutated_headers_never_crash_and_agree_with_reference(data: bytes) -> None:
    _agrees_with_reference(data, _parse_or_reject(data))


# ---------------------------------------------------------------- memory bounds


@pytest.mark.parametrize(
    "data",
    [
        struct.pack("<Q", 2**64 - 1) + b"{}",
        struct.pack("<Q", 1 << 20) + b"{" + b" " * ((1 << 20) - 2) + b"}",
        struct.pack("<Q", 56)
        + json.dumps({"t": {"dtype": "F32", "shape": [2**30, 2**30], "data_offsets": [0, 0]}})
        .encode()
        .ljust(56),
        struct.pack("<Q", 48)
        + json.dumps({"t": {"dtype": "F32", "shape": [0], "data_offsets": [0, 2**60]}})
        .encode()
        .ljust(48),
    ],
    ids=["len_2**64", "header_at_cap", "shape_2**60", "offset_2**60"],
)
def test_memory_stays_bounded_by_file_size(data: bytes) -> None:
    tracemalloc.start()
    try:
        _parse_or_reject(data, record=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(data) + (1 << 20)
