"""Settings: plain data, read once by the composition root (``hub/services/container.py``).

Subsystems never read settings themselves; the container hands them paths and URLs.
Environment variables use the ``LORADEX_`` prefix (``LORADEX_HOME``, ``LORADEX_DATABASE_URL``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    """Per-user data dir: ``$XDG_DATA_HOME/loradex`` or ``~/.local/share/loradex``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "loradex"


class Settings(BaseSettings):
    """Every setting, its environment variable and its default (the README table is generated
    from this class by ``hub.docs``)."""

    model_config = SettingsConfigDict(env_prefix="LORADEX_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="Data directory (catalog, blobs).")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog; default: SQLite file `catalog.db` in home. "
        "PostgreSQL: `postgresql+psycopg://user@host/db`.",
    )
    blob_dir: Path | None = Field(
        default=None, description="Blob store directory; default: `blobs/` in home."
    )
    model_cache_dir: Path | None = Field(
        default=None,
        description="Converted base models (fp32 safetensors); default: `models/` in home.",
    )
    zoo_dir: Path | None = Field(
        default=None,
        description="The benchmark zoo, for task names in `eval`/`train`; default: "
        "`../shared/zoo` when it exists.",
    )
    text_embedder: str = Field(
        default="minilm",
        description="Text embedder for search: `minilm` (all-MiniLM-L6-v2, offline), "
        "`minilm-int8` (the same model with int8 weights on ONNX Runtime, CPU only: a query ~3x "
        "sooner, vectors ~0.99 cosine to `minilm`'s; switching runs `loradex reindex`, "
        "`encoder train` and `generator train` again) or `hash` (a tiny deterministic one for "
        "tests).",
    )
    text_embedder_backend: Literal["auto", "torch", "onnx"] = Field(
        default="auto",
        description="How `minilm` runs: `onnx` (ONNX Runtime on the CPU: the same vectors, a "
        "query ~2.5x sooner; the `onnx` extra), `torch`, or `auto` (ONNX Runtime when installed "
        "and the search device is the CPU, else torch). The ONNX graph is exported from the "
        "packaged model once, into `embedder_cache_dir`.",
    )
    embedder_cache_dir: Path | None = Field(
        default=None,
        description="Where the text model's ONNX export is kept (shared by every data dir); "
        "default: `$XDG_CACHE_HOME/loradex/onnx` or `~/.cache/loradex/onnx`.",
    )
    search_device: str = Field(
        default="auto",
        description="Device of the search text embedder: `auto` (CUDA when torch sees one, "
        "else CPU), `cpu` or `cuda`. The vector index moves to the GPU by itself when faiss "
        "has GPU support (the `gpu` extra) and a GPU is visible.",
    )
    search_index_backend: Literal["auto", "flat", "hnsw"] = Field(
        default="auto",
        description="Vector index of search: `auto` (exact `flat` below "
        "`search_ann_threshold` adapters; above it exact `gpu-flat` when faiss sees a GPU, "
        "else HNSW32 with efSearch tuned at build time for recall@10 >= 0.97), or `flat` / "
        "`hnsw` always. Applies to indexes built from now on: `loradex reindex` rebuilds "
        "an existing one.",
    )
    search_ann_threshold: int = Field(
        default=20_000,
        ge=1,
        description="Under `search_index_backend = auto`: the catalog size from which search "
        "switches from exact to approximate (the index is rebuilt in the background as it "
        "grows past it).",
    )
    gc_grace_seconds: float = Field(
        default=3600.0,
        description="`gc` keeps unreferenced blobs younger than this (an `add` may be mid-way).",
    )

    jobs_backend: str = Field(
        default="inprocess",
        description="Where jobs (merges...) run: `inprocess` (a thread pool in the server) or "
        "`ray` (Ray tasks on the cluster at `ray_address`; `pip install loradex[ray]`).",
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster for `jobs_backend = ray`: `auto`, `HOST:6379` or "
        "`ray://HOST:10001`; default: start a private local Ray instance with the server.",
    )
    jobs_workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Worker threads of the in-process job pool; with `ray` and no `ray_address`, "
        "the CPUs of the private local Ray instance.",
    )
    job_modules: list[str] = Field(
        default=[],  # pydantic copies mutable defaults per instance
        description="Extra Python modules that register job kinds (plugins), imported by the "
        'server and by Ray workers; JSON list in the environment: `["pkg.jobs"]`.',
    )
    api_read_requires_token: bool = Field(
        default=False,
        description="REST reads need a bearer token too (writes always do).",
    )
    search_refresh_interval_s: float = Field(
        default=0.25,
        ge=0.0,
        le=60.0,
        description="A server re-checks the catalog for adapters added or removed by other "
        "processes at most this often (its own writes show up at once).",
    )
    search_query_cache_size: int = Field(
        default=4096, ge=0, description="Query embeddings kept in the search LRU cache."
    )
    upload_max_bytes: int = Field(
        default=256 << 20,
        ge=1,
        description="Largest accepted upload request body in bytes (HTTP 413 above it).",
    )
    hf_endpoint: str | None = Field(
        default=None,
        description="Hugging Face Hub URL for `sync`; default: `HF_ENDPOINT`, else "
        "https://huggingface.co.",
    )
    hf_token: SecretStr | None = Field(
        default=None,
        description="Hub access token for `sync` (push needs write access); default: "
        "`HF_TOKEN`, else the token saved by `hf auth login`.",
    )
    hf_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds to wait for each Hub metadata request."
    )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'catalog.db'}"

    @field_validator(
        "home", "blob_dir", "model_cache_dir", "zoo_dir", "embedder_cache_dir", mode="before"
    )
    @classmethod
    def _empty_path_is_unset(cls, value: object, info: ValidationInfo) -> object:
        """``LORADEX_BLOB_DIR=`` (set but empty) means the default, not ``Path("")``, which is
        the current directory: exports, blobs or a catalog would land wherever a command ran."""
        if isinstance(value, str) and not value.strip():
            return default_home() if info.field_name == "home" else None
        return value

    @property
    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.home / "blobs"

    @property
    def resolved_model_cache_dir(self) -> Path:
        return self.model_cache_dir or self.home / "models"

    @property
    def resolved_hf_endpoint(self) -> str | None:
        return self.hf_endpoint or os.environ.get("HF_ENDPOINT") or None

    @property
    def resolved_hf_token(self) -> str | None:
        if self.hf_token is not None:
            return self.hf_token.get_secret_value() or None
        return os.environ.get("HF_TOKEN") or None

    @property
    def resolved_zoo_dir(self) -> Path | None:
        if self.zoo_dir is not None:
            return self.zoo_dir
        guess = Path.cwd().parent / "shared" / "zoo"
        return guess if guess.is_dir() else None


def load_settings(data_dir: Path | None = None) -> Settings:
    """``--data-dir`` wins over ``LORADEX_HOME``, which wins over the per-user default."""
    return Settings(home=data_dir) if data_dir is not None else Settings()


def misspelt_settings(environ: Mapping[str, str] | None = None) -> list[str]:
    """One message per ``LORADEX_*`` variable that is not a setting but nearly spells one.

    Settings read only the variables they know, so ``LORADEX_TEXT_EMBEDER=minilm-int8`` would
    leave the default in place without a word. Names far from every setting (a wrapper's own
    ``LORADEX_TEST_*``) are left alone: only a likely typo is worth a warning.
    """
    env = os.environ if environ is None else environ
    known = [f"LORADEX_{name.upper()}" for name in Settings.model_fields]
    notes = []
    for key in sorted(env):
        upper = key.upper()  # pydantic-settings matches names case-insensitively
        if not upper.startswith("LORADEX_") or upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.85)
        if close:
            notes.append(f"{key} is not a setting and is ignored; did you mean {close[0]}?")
    return notes
