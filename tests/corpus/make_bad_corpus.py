"""Generate the committed corpus of bad adapter files: ``tests/corpus/bad/``.

Usage: ``python tests/corpus/make_bad_corpus.py [OUT_DIR]`` (default: the ``bad`` dir beside
this script). Deterministic: the same bytes every run (tests/test_bad_corpus.py checks that the
committed corpus equals a fresh build). Each entry has exactly one defect; ``manifest.json``
maps it to the specific error code the validator must raise.

``files/*`` are raw byte streams validated as safetensors (parse + finite check);
``dirs/*`` are PEFT adapter directories validated with ``read_peft_dir``.
This script writes bytes only; it never imports loradex, so it cannot mirror our own bugs.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PREFIX = "base_model.model.model.layers"
MANIFEST: dict[str, dict[str, str]] = {}
FIXED_ZIP_TIME = (2020, 1, 1, 0, 0, 0)

# A protocol-4 pickle of {"a": 1}, spelled out so the corpus does not depend on the pickle
# module's output. It is never loaded, only refused.
PICKLE_P4 = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s."
PICKLE_P2 = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s."
PICKLE_P0_GLOBAL = b"cos\nsystem\n(S'echo pwned'\ntR."


# ---------------------------------------------------------------- raw builders


def raw_st(header: Any, data: bytes = b"", *, length: int | None = None) -> bytes:
    """Header (a JSON-able object, or bytes taken as-is) + data, with an optional forged N."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def entry(dtype: str, shape: list[Any], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def tensors_st(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """A well-formed safetensors stream (sorted names, contiguous data)."""
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    chunks, offset = [], 0
    for name in sorted(tensors):
        arr = tensors[name]
        dtype = {"float16": "F16", "float32": "F32"}[arr.dtype.name]
        blob = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        header[name] = entry(dtype, list(arr.shape), offset, offset + len(blob))
        chunks.append(blob)
        offset += len(blob)
    return raw_st(header, b"".join(chunks))


def one_tensor(dtype: str = "F16", shape: list[Any] | None = None, offs: Any = None) -> bytes:
    """A one-tensor file with 16 zero data bytes (F16 [8]) and overridable fields."""
    e = {"dtype": dtype, "shape": [8] if shape is None else shape, "data_offsets": offs or [0, 16]}
    return raw_st({"t": e}, bytes(16))


def lora_tensors(
    rank: int = 2, hidden: int = 8, layers: int = 2, dtype: Any = np.float16
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for i in range(layers):
        for proj in ("q_proj", "v_proj"):
            key = f"{PREFIX}.{i}.self_attn.{proj}"
            out[f"{key}.lora_A.weight"] = rng.standard_normal((rank, hidden)).astype(dtype)
            out[f"{key}.lora_B.weight"] = rng.standard_normal((hidden, rank)).astype(dtype)
    return out


def lora_config(**overrides: Any) -> dict[str, Any]:
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "tiny-llama",
        "r": 2,
        "lora_alpha": 4,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    config.update(overrides)
    return config


# ---------------------------------------------------------------- writers


def add_file(out: Path, name: str, data: bytes, code: str, defect: str) -> None:
    (out / "files").mkdir(parents=True, exist_ok=True)
    (out / "files" / name).write_bytes(data)
    MANIFEST[f"files/{name}"] = {"code": code, "defect": defect}


def add_dir(out: Path, name: str, files: dict[str, bytes], code: str, defect: str) -> None:
    d = out / "dirs" / name
    d.mkdir(parents=True, exist_ok=True)
    for fname, data in files.items():
        (d / fname).write_bytes(data)
    MANIFEST[f"dirs/{name}"] = {"code": code, "defect": defect}


def peft_dir(config: Any = None, tensors: dict[str, np.ndarray] | None = None) -> dict[str, bytes]:
    cfg = lora_config() if config is None else config
    cfg_bytes = cfg if isinstance(cfg, bytes) else json.dumps(cfg, indent=1).encode()
    weights = tensors_st(lora_tensors() if tensors is None else tensors)
    return {"adapter_config.json": cfg_bytes, "adapter_model.safetensors": weights}


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, FIXED_ZIP_TIME), data)
    return buf.getvalue()


# ---------------------------------------------------------------- the corpus


def safetensors_files(out: Path) -> None:
    good = tensors_st({"a": np.arange(4, dtype=np.float16), "b": np.ones(2, np.float32)})
    f = lambda name, data, code, defect: add_file(out, name, data, code, defect)  # noqa: E731
    f("empty.safetensors", b"", "safetensors_truncated", "empty file")
    f("short_prefix.safetensors", b"\x10\x00\x00", "safetensors_truncated", "< 8 bytes")
    f("truncated_data.safetensors", good[:-3], "safetensors_truncated", "data cut short")
    f("header_past_eof.safetensors", raw_st(b"{}", length=4096),
      "safetensors_header_too_large", "header length > file size")
    f("header_bomb.safetensors", raw_st(b"{}", length=1 << 40),
      "safetensors_header_too_large", "header length 2**40 > cap")
    f("header_len_max.safetensors", raw_st(b"{}", length=2**64 - 1),
      "safetensors_header_too_large", "header length 2**64-1")
    f("header_not_utf8.safetensors", raw_st(b'{"\xff\xfe":1}'),
      "safetensors_header_not_utf8", "invalid UTF-8 in header")
    f("header_not_json.safetensors", raw_st(b'{"t": '), "safetensors_header_not_json", "cut JSON")
    f("header_nul_padding.safetensors", struct.pack("<Q", 8) + b"{}\x00\x00\x00\x00\x00\x00",
      "safetensors_header_not_json", "NUL padding instead of spaces")
    f("header_nan_constant.safetensors", raw_st(b'{"t":{"dtype":"F16","shape":[NaN],'
      b'"data_offsets":[0,0]}}'), "safetensors_header_not_json", "NaN JSON constant")
    f("header_deep_nesting.safetensors", raw_st(b'{"t":' + b"[" * 5000 + b"]" * 5000 + b"}"),
      "safetensors_header_not_json", "5000-deep nested arrays")
    f("header_array.safetensors", raw_st([1, 2]), "safetensors_header_not_object", "JSON array")
    f("header_string.safetensors", raw_st("tensors"), "safetensors_header_not_object",
      "JSON string")
    f("dup_tensor_key.safetensors",
      raw_st(b'{"t":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},'
             b'"t":{"dtype":"F16","shape":[4],"data_offsets":[8,16]}}', bytes(16)),
      "safetensors_duplicate_key", "tensor name twice")
    f("dup_entry_field.safetensors",
      raw_st(b'{"t":{"dtype":"F16","dtype":"F32","shape":[8],"data_offsets":[0,16]}}',
             bytes(16)), "safetensors_duplicate_key", "dtype twice in one entry")
    for missing in ("dtype", "shape", "data_offsets"):
        e = entry("F16", [8], 0, 16)
        del e[missing]
        f(f"missing_{missing}.safetensors", raw_st({"t": e}, bytes(16)),
          "safetensors_bad_entry", f"entry without {missing}")
    f("extra_entry_field.safetensors",
      raw_st({"t": {**entry("F16", [8], 0, 16), "x": 1}}, bytes(16)),
      "safetensors_bad_entry", "unexpected entry field")
    f("entry_not_object.safetensors", raw_st({"t": ["F16", [8], [0, 16]]}, bytes(16)),
      "safetensors_bad_entry", "entry is a list")
    f("dtype_number.safetensors", one_tensor(dtype=5), "safetensors_bad_entry",  # type: ignore
      "dtype is a number")
    for dtype in ("I8", "F64", "U8", "x"):
        f(f"dtype_{dtype}.safetensors", one_tensor(dtype=dtype), "safetensors_bad_dtype",
          f"dtype {dtype}")
    for label, shape in (("negative", [-8]), ("float", [8.0]), ("bool", [True, 8]),
                         ("string", ["8"]), ("not_list", 8)):
        f(f"shape_{label}.safetensors", one_tensor(shape=shape), "safetensors_bad_shape",
          f"shape {shape!r}")
    f("numel_overflow.safetensors", one_tensor(shape=[2**40, 2**40]), "safetensors_overflow",
      "shape [2**40, 2**40]")
    f("dim_overflow_zero.safetensors", one_tensor(shape=[0, 2**70], offs=[0, 0]),
      "safetensors_overflow", "shape [0, 2**70]")
    f("offset_overflow.safetensors", one_tensor(offs=[2**70, 2**70 + 16]),
      "safetensors_overflow", "offsets around 2**70")
    two = lambda a, b, data=16: raw_st(  # noqa: E731
        {"a": entry("F16", [4], *a), "b": entry("F16", [4], *b)}, bytes(data))
    f("offsets_overlap.safetensors", two((0, 8), (4, 12), 12), "safetensors_offsets_invalid",
      "tensors overlap")
    f("offsets_gap.safetensors", two((0, 8), (12, 20), 20), "safetensors_offsets_invalid",
      "gap between tensors")
    f("offsets_not_from_zero.safetensors", one_tensor(offs=[4, 20]),
      "safetensors_offsets_invalid", "first tensor starts at 4")
    f("offsets_past_end.safetensors", two((0, 8), (8, 16), 10), "safetensors_truncated",
      "last tensor ends past the data")
    f("offsets_begin_gt_end.safetensors", one_tensor(offs=[16, 0]),
      "safetensors_offsets_invalid", "begin > end")
    f("offsets_negative.safetensors", one_tensor(offs=[-16, 0]), "safetensors_offsets_invalid",
      "negative offsets")
    f("offsets_three.safetensors", one_tensor(offs=[0, 8, 16]), "safetensors_bad_entry",
      "three offsets")
    f("size_mismatch.safetensors", one_tensor(shape=[4]), "safetensors_size_mismatch",
      "F16 [4] needs 8 bytes, offsets give 16")
    f("trailing_bytes.safetensors", good + b"\x00" * 8, "safetensors_trailing_bytes",
      "8 bytes after the last tensor")
    f("polyglot_zip_appended.safetensors", good + zip_bytes({"x.txt": b"hi"}),
      "safetensors_trailing_bytes", "valid file with a zip appended")
    many = b"{" + b",".join(b'"%d":{"dtype":"F16","shape":[0],"data_offsets":[0,0]}' % i
                            for i in range(10_001)) + b"}"
    f("too_many_tensors.safetensors", raw_st(many), "safetensors_too_many_tensors",
      "10,001 empty tensors")
    f("metadata_not_object.safetensors",
      raw_st({"__metadata__": ["x"], "t": entry("F16", [8], 0, 16)}, bytes(16)),
      "safetensors_bad_metadata", "__metadata__ is a list")
    f("metadata_int_value.safetensors",
      raw_st({"__metadata__": {"format": 1}, "t": entry("F16", [8], 0, 16)}, bytes(16)),
      "safetensors_bad_metadata", "__metadata__ value is an int")
    f("pickle_p4.safetensors", PICKLE_P4, "pickle_refused", "protocol-4 pickle renamed")
    f("pickle_p2.safetensors", PICKLE_P2, "pickle_refused", "protocol-2 pickle renamed")
    f("pickle_p0_global.safetensors", PICKLE_P0_GLOBAL, "pickle_refused",
      "protocol-0 pickle calling os.system")
    f("torch_zip.safetensors",
      zip_bytes({"archive/data.pkl": PICKLE_P2, "archive/version": b"3\n"}),
      "pickle_refused", "torch zip checkpoint renamed")
    f("plain_zip.safetensors", zip_bytes({"readme.txt": b"hello"}),
      "safetensors_not_safetensors", "zip archive")
    f("gguf_magic.safetensors", b"GGUF\x03\x00\x00\x00" + bytes(24),
      "safetensors_not_safetensors", "GGUF file")
    f("npy_magic.safetensors", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}" + bytes(16),
      "safetensors_not_safetensors", "numpy .npy file")
    nan = np.array([1.0, np.nan], np.float32)
    f("nan_values.safetensors", tensors_st({"t": nan}), "weights_not_finite", "NaN value")
    f("inf_values.safetensors", tensors_st({"t": np.array([np.inf], np.float16)}),
      "weights_not_finite", "+Inf value")


def _mutated(mutate: Callable[[dict[str, np.ndarray]], None], **kw: Any) -> dict[str, np.ndarray]:
    tensors = lora_tensors(**kw)
    mutate(tensors)
    return tensors


def adapter_dirs(out: Path) -> None:
    d = lambda name, files, code, defect: add_dir(out, name, files, code, defect)  # noqa: E731
    q0 = f"{PREFIX}.0.self_attn.q_proj"

    def poison(value: float) -> Callable[[dict[str, np.ndarray]], None]:
        def apply(t: dict[str, np.ndarray]) -> None:
            b = t[f"{q0}.lora_B.weight"].copy()
            b[1, 1] = value
            t[f"{q0}.lora_B.weight"] = b
        return apply

    d("nan_weights", peft_dir(tensors=_mutated(poison(np.nan))), "weights_not_finite", "NaN")
    d("inf_weights", peft_dir(tensors=_mutated(poison(-np.inf))), "weights_not_finite", "-Inf")
    d("lora_A_only", peft_dir(tensors=_mutated(lambda t: t.pop(f"{q0}.lora_B.weight"))),
      "lora_unpaired", "lora_A without lora_B")
    d("lora_B_only", peft_dir(tensors=_mutated(lambda t: t.pop(f"{q0}.lora_A.weight"))),
      "lora_unpaired", "lora_B without lora_A")
    d("rank_ne_r", peft_dir(config=lora_config(r=4)), "lora_rank_mismatch", "rank 2, r=4")
    d("rank_ne_rank_pattern", peft_dir(config=lora_config(rank_pattern={"v_proj": 3})),
      "lora_rank_mismatch", "rank 2, rank_pattern v_proj=3")

    def to_3d(t: dict[str, np.ndarray]) -> None:
        t[f"{q0}.lora_A.weight"] = t[f"{q0}.lora_A.weight"].reshape(2, 2, 4)

    d("factor_3d", peft_dir(tensors=_mutated(to_3d)), "lora_shape_mismatch", "3-D lora_A")

    def disagree(t: dict[str, np.ndarray]) -> None:
        t[f"{q0}.lora_B.weight"] = np.zeros((8, 3), np.float16)

    d("ab_rank_disagree", peft_dir(tensors=_mutated(disagree)), "lora_shape_mismatch",
      "A rank 2, B rank 3")
    d("empty_no_tensors", peft_dir(tensors={}), "adapter_empty", "no tensors at all")
    d("empty_only_metadata",
      {"adapter_config.json": json.dumps(lora_config()).encode(),
       "adapter_model.safetensors": raw_st({"__metadata__": {"format": "pt"}})},
      "adapter_empty", "only __metadata__")
    d("config_not_json", peft_dir(config=b"{peft_type: LORA"), "config_invalid", "bad JSON")
    d("config_array", peft_dir(config=b'["LORA"]'), "config_invalid", "config is an array")
    d("config_duplicate_key", peft_dir(config=b'{"peft_type":"LORA","r":2,"r":4}'),
      "config_invalid", "config repeats r")
    d("config_redos_regex", peft_dir(config=lora_config(target_modules="(a+)+$")),
      "config_invalid", "catastrophic-backtracking target_modules regex")
    d("config_rslora_string", peft_dir(config=lora_config(use_rslora="false")),
      "config_invalid", "use_rslora is the string 'false'")
    d("config_nan_alpha", peft_dir(config=b'{"peft_type":"LORA","r":2,"lora_alpha":NaN}'),
      "config_invalid", "lora_alpha is NaN")
    d("config_r_string", peft_dir(config=lora_config(r="2")), "config_invalid", "r is a string")
    d("config_too_large",
      peft_dir(config=json.dumps(lora_config()).encode() + b" " * (1 << 20)),
      "config_invalid", "config over 1 MiB")
    d("config_missing", {"adapter_model.safetensors": tensors_st(lora_tensors())},
      "config_missing", "no adapter_config.json")
    d("target_modules_nothing", peft_dir(config=lora_config(target_modules=["k_proj"])),
      "target_modules_unmatched", "target_modules matches no module present")
    d("target_regex_nothing", peft_dir(config=lora_config(target_modules=r".*\.mlp\..*")),
      "target_modules_unmatched", "regex target_modules matches nothing")
    d("module_not_targeted", peft_dir(config=lora_config(target_modules=["q_proj"])),
      "target_modules_unmatched", "v_proj tensors, targets only q_proj")

    def unknown(t: dict[str, np.ndarray]) -> None:
        t["base_model.model.model.layers.0.mlp.secret_payload"] = np.zeros(4, np.float16)

    d("unknown_tensor_key", peft_dir(tensors=_mutated(unknown)), "unknown_tensor",
      "tensor key PEFT never writes")

    def no_prefix(t: dict[str, np.ndarray]) -> None:
        t["model.layers.0.self_attn.q_proj.lora_A.weight"] = t.pop(f"{q0}.lora_A.weight")

    d("key_without_prefix", peft_dir(tensors=_mutated(no_prefix)), "unknown_tensor",
      "key lacks base_model.model.")
    d("peft_type_ia3", peft_dir(config=lora_config(peft_type="IA3")), "unsupported_peft_type",
      "IA3 adapter")
    d("bin_only", {"adapter_config.json": json.dumps(lora_config()).encode(),
                   "adapter_model.bin": PICKLE_P2}, "pickle_refused", "adapter_model.bin only")
    d("pt_only", {"adapter_config.json": json.dumps(lora_config()).encode(),
                  "weights.pt": zip_bytes({"archive/data.pkl": PICKLE_P2})},
      "pickle_refused", "a .pt checkpoint only")
    d("pickle_named_safetensors",
      {"adapter_config.json": json.dumps(lora_config()).encode(),
       "adapter_model.safetensors": PICKLE_P4}, "pickle_refused",
      "pickle under adapter_model.safetensors")
    d("weights_bad_dtype",
      {"adapter_config.json": json.dumps(lora_config()).encode(),
       "adapter_model.safetensors": one_tensor(dtype="I8")}, "safetensors_bad_dtype",
      "I8 tensor in an adapter")


def build(out: Path) -> None:
    MANIFEST.clear()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    safetensors_files(out)
    adapter_dirs(out)
    manifest = {"version": 1, "entries": dict(sorted(MANIFEST.items()))}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "bad")
