"""storage/safetensors_io.py: strict parsing, deterministic writing, parity with the reference
``safetensors`` library (used here only as an oracle)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors.numpy as st_numpy
import safetensors.torch as st_torch
import torch

from hub.core.errors import (
    SAFETENSORS_CODES,
    InvalidAdapterError,
    InvalidSafetensorsError,
    PickleRefusedError,
)
from storage.safetensors_io import (
    check_finite,
    float32_to_bf16_bits,
    parse_safetensors,
    serialize_safetensors,
)


def _raw(header: dict | bytes, data: bytes = b"") -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _code(data: bytes, **kw) -> str:
    with pytest.raises(InvalidAdapterError) as info:
        parse_safetensors(data, **kw)
    return info.value.code


@pytest.fixture
def sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "b.f16": rng.standard_normal((3, 5)).astype(np.float16),
        "a.f32": rng.standard_normal((4,)).astype(np.float32),
        "empty": np.zeros((0, 7), np.float32),
        "scalar": np.array(2.5, np.float32),
    }


# ---------------------------------------------------------------- round trips and parity


def test_round_trip_preserves_values_dtypes_and_metadata(sample):
    data = serialize_safetensors(sample, metadata={"format": "pt", "ü": "ß"})
    parsed = parse_safetensors(data)
    assert parsed.metadata == {"format": "pt", "ü": "ß"}
    assert parsed.dtypes == {"a.f32": "F32", "b.f16": "F16", "empty": "F32", "scalar": "F32"}
    for name, array in sample.items():
        assert parsed.tensors[name].dtype == array.dtype
        np.testing.assert_array_equal(parsed.tensors[name], array)


def test_serialize_is_deterministic_sorted_and_aligned(sample):
    data = serialize_safetensors(sample)
    assert data == serialize_safetensors(dict(reversed(list(sample.items()))))
    n = struct.unpack("<Q", data[:8])[0]
    assert n % 8 == 0
    header = json.loads(data[8 : 8 + n])
    assert list(header) == sorted(sample)
    assert header["a.f32"]["data_offsets"][0] == 0


def test_output_loads_in_reference_library(sample):
    data = serialize_safetensors(sample, metadata={"k": "v"})
    for name, array in st_numpy.load(data).items():
        np.testing.assert_array_equal(array, sample[name])
    loaded = st_torch.load(data)
    torch.testing.assert_close(loaded["b.f16"], torch.from_numpy(sample["b.f16"]))


def test_reads_reference_library_output(sample):
    data = st_numpy.save(sample, metadata={"format": "np"})
    parsed = parse_safetensors(data)
    assert parsed.metadata == {"format": "np"}
    for name, array in sample.items():
        np.testing.assert_array_equal(parsed.tensors[name], array)


def test_bf16_decodes_exactly_like_torch():
    t = torch.randn(17, 3).to(torch.bfloat16)
    t[0, 0], t[0, 1], t[0, 2] = float("inf"), float("-inf"), 0.0
    parsed = parse_safetensors(st_torch.save({"w": t}))
    assert parsed.dtypes["w"] == "BF16"
    assert parsed.tensors["w"].dtype == np.float32
    np.testing.assert_array_equal(parsed.tensors["w"], t.float().numpy())


def test_bf16_writer_rounds_to_nearest_even_like_torch():
    rng = np.random.default_rng(2)
    x = np.concatenate(
        [
            rng.standard_normal(5000).astype(np.float32) * 1e3,
            # exact ties between two bf16 values: low 16 bits == 0x8000
            (np.arange(64, dtype=np.uint32) << 16 | 0x8000).view(np.float32),
            np.array([np.inf, -np.inf, 0.0, -0.0, 3.4e38, 1e-40], np.float32),
        ]
    )
    expected = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(float32_to_bf16_bits(x), expected)
    data = serialize_safetensors({"w": x}, dtypes={"w": "BF16"})
    back = st_torch.load(data)["w"]
    assert back.dtype == torch.bfloat16
    np.testing.assert_array_equal(back.float().numpy(), parse_safetensors(data).tensors["w"])


def test_bf16_writer_keeps_nan_a_nan():
    nan_with_low_payload = np.array([0x7F80FFFF, 0xFFFFFFFF], np.uint32).view(np.float32)
    bits = float32_to_bf16_bits(nan_with_low_payload)
    assert np.isnan((bits.astype(np.uint32) << 16).view(np.float32)).all()


def test_serialize_casts_on_request_and_refuses_unknown_dtypes():
    data = serialize_safetensors({"w": np.ones(3, np.float32)}, dtypes={"w": "F16"})
    assert parse_safetensors(data).tensors["w"].dtype == np.float16
    with pytest.raises(InvalidSafetensorsError) as info:
        serialize_safetensors({"w": np.ones(3, np.float64)})
    assert info.value.code == "safetensors_bad_dtype"
    with pytest.raises(InvalidSafetensorsError):
        serialize_safetensors({"w": np.ones(3, np.float32)}, dtypes={"w": "I8"})


def test_tensors_are_read_only(sample):
    parsed = parse_safetensors(serialize_safetensors(sample))
    with pytest.raises(ValueError):
        parsed.tensors["b.f16"][0, 0] = 1
    bf = parse_safetensors(serialize_safetensors(sample, dtypes={"a.f32": "BF16"}))
    with pytest.raises(ValueError):
        bf.tensors["a.f32"][0] = 1


def test_header_length_starting_with_pickle_opcode_is_still_safetensors():
    # N = 0x0280 makes the file start with b"\x80\x02", the pickle protocol-2 prefix: content
    # sniffing must not misfire on a valid file.
    body = json.dumps({"__metadata__": {"pad": "x" * 600}}).encode()
    body += b" " * (0x280 - len(body))
    data = struct.pack("<Q", 0x280) + body
    assert data[:2] == b"\x80\x02"
    assert parse_safetensors(data).metadata["pad"] == "x" * 600


def test_empty_header_is_valid_and_whitespace_padding_accepted():
    assert parse_safetensors(_raw(b"{}")).tensors == {}
    assert parse_safetensors(struct.pack("<Q", 8) + b"{}      ").tensors == {}


# ---------------------------------------------------------------- specific rejections


def test_caps_are_configurable(sample):
    data = serialize_safetensors(sample)
    assert _code(data, max_header_bytes=16) == "safetensors_header_too_large"
    assert _code(data, max_tensors=3) == "safetensors_too_many_tensors"
    assert len(parse_safetensors(data, max_tensors=4).tensors) == 4


@pytest.mark.parametrize(
    ("entry", "data_len", "code"),
    [
        ({"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}, 4, None),
        ({"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}, 6, "safetensors_trailing_bytes"),
        ({"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}, 2, "safetensors_truncated"),
        ({"dtype": "F16", "shape": [3], "data_offsets": [0, 4]}, 4, "safetensors_size_mismatch"),
        ({"dtype": "F16", "shape": [2], "data_offsets": [2, 6]}, 6, "safetensors_offsets_invalid"),
        ({"dtype": "F16", "shape": [2], "data_offsets": [True, 4]}, 4, "safetensors_bad_entry"),
        ({"dtype": "F16", "shape": [2], "data_offsets": [0.0, 4]}, 4, "safetensors_bad_entry"),
        ({"dtype": "F16", "shape": [2], "data_offsets": "0-4"}, 4, "safetensors_bad_entry"),
        ({"dtype": "F16", "shape": [2], "data_offsets": [0, 2**64]}, 4, "safetensors_overflow"),
        ({"dtype": "F16", "shape": [False], "data_offsets": [0, 0]}, 0, "safetensors_bad_shape"),
        ({"dtype": "F16", "shape": None, "data_offsets": [0, 0]}, 0, "safetensors_bad_shape"),
        ({"dtype": "f16", "shape": [2], "data_offsets": [0, 4]}, 4, "safetensors_bad_dtype"),
        ({"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}, 2, "safetensors_bad_dtype"),
        ({"dtype": None, "shape": [2], "data_offsets": [0, 4]}, 4, "safetensors_bad_entry"),
        (
            {"dtype": "F32", "shape": [2**20, 2**20, 2**20], "data_offsets": [0, 4]},
            4,
            "safetensors_overflow",
        ),
    ],
)
def test_entry_checks(entry, data_len, code):
    data = _raw({"t": entry}, bytes(data_len))
    if code is None:
        assert parse_safetensors(data).tensors["t"].shape == tuple(entry["shape"])
    else:
        assert _code(data) == code


def _one(dtype: str, shape: list, offsets: list, data: bytes = b"") -> bytes:
    return _raw({"t": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}, data)


def test_every_safetensors_code_is_reachable_and_documented():
    empty = {"dtype": "F16", "shape": [0], "data_offsets": [0, 0]}
    cases = {
        "safetensors_truncated": b"\x00" * 3,
        "safetensors_header_too_large": struct.pack("<Q", 1 << 30) + b"{}",
        "safetensors_header_not_utf8": _raw(b'{"\xc3"}'),
        "safetensors_header_not_json": _raw(b"{,}"),
        "safetensors_header_not_object": _raw(b"[]"),
        "safetensors_duplicate_key": _raw(b'{"__metadata__":{},"__metadata__":{}}'),
        "safetensors_bad_entry": _raw({"t": 1}),
        "safetensors_bad_dtype": _one("I64", [], [0, 8]),
        "safetensors_bad_shape": _one("F16", [-1], [0, 0]),
        "safetensors_overflow": _one("F16", [2**62], [0, 0]),
        "safetensors_size_mismatch": _one("F16", [], [0, 0]),
        "safetensors_offsets_invalid": _one("F16", [], [1, 3], b"000"),
        "safetensors_trailing_bytes": _raw(b"{}", b"x"),
        "safetensors_too_many_tensors": _raw({str(i): empty for i in range(10_001)}),
        "safetensors_bad_metadata": _raw({"__metadata__": {"a": None}}),
        "safetensors_not_safetensors": b"GGUF" + bytes(60),
    }
    assert set(cases) == set(SAFETENSORS_CODES)
    for code, data in cases.items():
        assert _code(data) == code, code


def test_pickles_are_refused_by_content():
    import pickle

    for protocol in range(6):
        data = pickle.dumps({"weights": [1.0, 2.0]}, protocol=protocol)
        with pytest.raises(PickleRefusedError) as info:
            parse_safetensors(data)
        assert info.value.code == "pickle_refused"
        assert "safetensors" in info.value.message


def test_error_messages_name_the_tensor():
    data = _raw({"my.tensor": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8))
    with pytest.raises(InvalidSafetensorsError, match="my.tensor"):
        parse_safetensors(data)


# ---------------------------------------------------------------- check_finite


def test_check_finite_names_first_bad_tensor():
    check_finite({"a": np.ones(3, np.float16), "e": np.zeros(0, np.float32)})
    tensors = {
        "z": np.array([np.inf], np.float32),
        "b": np.array([1, np.nan], np.float16),
        "a": np.ones(2, np.float32),
    }
    with pytest.raises(InvalidAdapterError) as info:
        check_finite(tensors)
    assert info.value.code == "weights_not_finite"
    assert "'b'" in info.value.message and "NaN" in info.value.message
