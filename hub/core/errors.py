"""The one error tree of loradex.

Every error carries a stable machine-readable ``code`` (part of the public contract: CLI `--json`
errors, REST error bodies, tests) and a ``kind`` that the delivery layers map to an exit code or an
HTTP status in exactly one place each (``hub/cli.py``, ``api/errors.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar


class HubError(Exception):
    """Base of every loradex error. ``code`` is stable; ``message`` is for people."""

    code: ClassVar[str] = "hub_error"
    # "bad_input" -> CLI exit 2 / HTTP 4xx; "not_found" -> exit 2 / 404; "conflict" -> exit 1 / 409;
    # "failure" -> exit 1 / 500.
    kind: ClassVar[str] = "failure"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # instance override of a specific sub-code
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class BadInputError(HubError):
    code = "bad_input"
    kind = "bad_input"


class InvalidNameError(BadInputError):
    code = "invalid_name"


class InvalidAdapterError(BadInputError):
    """An adapter file or directory fails validation; ``code`` names the exact defect."""

    code = "invalid_adapter"


class InvalidSafetensorsError(InvalidAdapterError):
    """A safetensors byte stream is malformed; ``code`` is one of ``SAFETENSORS_CODES``."""

    code = "safetensors_invalid"


class PickleRefusedError(InvalidAdapterError):
    code = "pickle_refused"


class IncompatibleBaseModelError(BadInputError):
    code = "incompatible_base_model"


class NotMergeableError(BadInputError):
    code = "not_mergeable"


class UnknownNameError(BadInputError):
    """An unknown registry key (method, backend, base model...): message lists the known ones."""

    code = "unknown_name"


class NotFoundError(HubError):
    code = "not_found"
    kind = "not_found"


class ConflictError(HubError):
    code = "conflict"
    kind = "conflict"


class StorageError(HubError):
    code = "storage_error"


class BlobCorruptedError(StorageError):
    code = "blob_corrupted"


# Hugging Face Hub failures (storage/hf_hub.py maps every HTTP/transport error to one of these;
# ``code`` names the case: hf_repo_not_found, hf_revision_not_found, hf_file_not_found,
# hf_unauthorized, hf_forbidden, hf_rate_limited, hf_connection_dropped, hf_timeout...).
class HfHubError(HubError):
    """The Hub answered with an error we cannot attribute to the request (5xx, bad reply)."""

    code = "hf_error"


class HfNotFoundError(NotFoundError):
    code = "hf_not_found"


class HfAuthError(BadInputError):
    """401/403 from the Hub: the token (``hf_token`` / HF_TOKEN) is missing, wrong or lacks a
    permission. Bad input, not our 401: the caller must fix the Hub credentials."""

    code = "hf_unauthorized"


class HfRateLimitedError(HfHubError):
    code = "hf_rate_limited"


class HfUnreachableError(HfHubError):
    """No usable answer: connection refused or dropped mid-transfer, or a timeout."""

    code = "hf_unreachable"


# Specific codes raised as InvalidSafetensorsError(code=...). Kept here so tests and docs can
# enumerate them; each names one defect class.
SAFETENSORS_CODES: dict[str, str] = {
    "safetensors_truncated": "file shorter than its 8-byte header length prefix or its data",
    "safetensors_header_too_large": "declared header length exceeds the cap or the file size",
    "safetensors_header_not_utf8": "header bytes are not valid UTF-8",
    "safetensors_header_not_json": "header is not valid JSON",
    "safetensors_header_not_object": "header JSON is not an object of tensor entries",
    "safetensors_duplicate_key": "header JSON repeats a key",
    "safetensors_bad_entry": "a tensor entry lacks dtype/shape/data_offsets or has wrong types",
    "safetensors_bad_dtype": "a tensor dtype is not allowed for LoRA weights (F16, BF16, F32)",
    "safetensors_bad_shape": "a shape is not a list of non-negative integers",
    "safetensors_overflow": "shape product or offsets overflow the allowed range",
    "safetensors_size_mismatch": "a tensor's byte length disagrees with dtype x shape",
    "safetensors_offsets_invalid": "tensor offsets overlap, leave gaps or run past the data",
    "safetensors_trailing_bytes": "bytes after the last tensor",
    "safetensors_too_many_tensors": "more tensors than an adapter may hold",
    "safetensors_bad_metadata": "__metadata__ is not a map of strings",
    "safetensors_not_safetensors": "content is a pickle, zip or other non-safetensors format",
}

# Specific codes raised as InvalidAdapterError(code=...) (PickleRefusedError for pickles) by the
# PEFT directory reader (storage/peft_format.py); each names one defect class.
ADAPTER_CODES: dict[str, str] = {
    "pickle_refused": "pickled weights (.bin/.pt/.ckpt/.pkl, torch zip) are never loaded",
    "config_missing": "the adapter directory or its adapter_config.json is missing",
    "config_invalid": "adapter_config.json is too large, not JSON, not an object or ill-typed",
    "weights_missing": "adapter_model.safetensors is missing",
    "weights_invalid": "adapter_model.safetensors is not a regular file or is too large",
    "unsupported_peft_type": "peft_type is not LORA",
    "lora_unpaired": "a module has lora_A without lora_B or vice versa",
    "lora_duplicate_factor": "a module has two lora_A (or lora_B) tensors",
    "lora_shape_mismatch": "a factor is not 2-D or A and B disagree on the rank",
    "lora_rank_mismatch": "a module's rank differs from the config's r / rank_pattern",
    "lora_rank_zero": "a module has rank 0",
    "weights_not_finite": "a tensor contains NaN or Inf",
    "adapter_empty": "no LoRA tensors",
    "target_modules_unmatched": "a module is not matched by target_modules",
    "unknown_tensor": "a tensor key is not a LoRA factor or a known PEFT extra",
}
