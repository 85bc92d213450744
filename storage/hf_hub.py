"""A thin wrapper over the real ``huggingface_hub`` client: list PEFT adapters, pin a revision to
its commit sha, download exactly the two PEFT files (plus the card) at that sha, and publish.

Plain values in (endpoint, token, timeouts), typed results out (:class:`HubSnapshot`,
:class:`AdapterDownload`, :class:`PushedCommit`). Every call goes through the choke point in
``storage/hf_errors.py``, so callers only ever see the HubError tree.

What is never downloaded: pickled weights (a repo that only has ``adapter_model.bin`` is refused
from its file list, before any byte is fetched), other weights, tokenizers, optimizer states.
Files go to a private temporary cache that is deleted after reading; sizes and the LFS sha256
the Hub advertises are checked against what arrived.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.utils import silent_tqdm

from hub.core.errors import BadInputError, HfHubError, InvalidAdapterError, PickleRefusedError
from storage.hf_card import MAX_CARD_BYTES
from storage.hf_errors import Call, hub_errors
from storage.peft_config import MAX_CONFIG_BYTES
from storage.peft_format import _PICKLE_SUFFIXES, CONFIG_NAME, MAX_WEIGHTS_BYTES, WEIGHTS_NAME

CARD_NAME = "README.md"
DEFAULT_REVISION = "main"
_SHA = re.compile(r"[0-9a-f]{40}")
# The Hub's repo-id rules (huggingface_hub.utils.validate_repo_id), ASCII only, namespace
# required: "owner/name", each part 1-96 of letters, digits, '_', '-', '.', starting and ending
# with a letter, digit or '_', no "--" or "..", not ending in ".git".
_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"{_PART}/{_PART}")
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,254}")


def validate_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id):
        raise BadInputError(
            f"invalid Hub repository id {repo_id!r}: expected OWNER/NAME, each 1-96 letters, "
            "digits, '_', '-' or '.'",
            code="invalid_repo_id",
        )
    if "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        raise BadInputError(
            f"invalid Hub repository id {repo_id!r}: '--', '..' and a '.git' suffix are not "
            "allowed",
            code="invalid_repo_id",
        )
    return repo_id


def parse_repo_spec(text: str) -> tuple[str, str | None]:
    """``OWNER/NAME[@REVISION]`` -> (repo id, revision or None for the default branch)."""
    repo_id, sep, revision = text.partition("@")
    validate_repo_id(repo_id)
    if not sep:
        return repo_id, None
    if not _REVISION.fullmatch(revision) or ".." in revision:
        raise BadInputError(
            f"invalid revision in {text!r}: a branch, tag or commit sha is expected",
            code="invalid_revision",
        )
    return repo_id, revision


@dataclass(frozen=True)
class HubFile:
    name: str
    size: int | None = None
    sha256: str | None = None  # the LFS oid, when the Hub stores the file in LFS


@dataclass(frozen=True)
class HubSnapshot:
    """A repository pinned to one commit."""

    repo_id: str
    sha: str
    files: dict[str, HubFile] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    requested: str | None = None  # the revision asked for (branch, tag, sha) or None

    @property
    def source(self) -> str:
        return f"hf://{self.repo_id}@{self.sha}"


@dataclass(frozen=True)
class AdapterDownload:
    snapshot: HubSnapshot
    config_bytes: bytes
    weights_bytes: bytes
    card_text: str | None


@dataclass(frozen=True)
class PushedCommit:
    repo_id: str
    sha: str
    url: str

    @property
    def source(self) -> str:
        return f"hf://{self.repo_id}@{self.sha}"


class HfHubClient:
    """The Hub, as loradex uses it. ``endpoint`` None means huggingface.co; ``token`` None lets
    huggingface_hub find one (HF_TOKEN, then the token saved by ``hf auth login``)."""

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        max_weights_bytes: int = MAX_WEIGHTS_BYTES,
    ) -> None:
        self._api = HfApi(endpoint=endpoint.rstrip("/") if endpoint else None, token=token)
        self.timeout_s = timeout_s
        self.max_weights_bytes = max_weights_bytes

    @property
    def endpoint(self) -> str:
        return str(self._api.endpoint)

    def _call(self, action: str, repo_id: str | None = None, revision: str | None = None) -> Call:
        return Call(action, repo_id, revision, self.endpoint)

    # -- reading ------------------------------------------------------------------------------
    def list_adapters(
        self,
        *,
        base_model: str | None = None,
        author: str | None = None,
        search: str | None = None,
        tags: Sequence[str] = (),
        limit: int = 20,
    ) -> list[str]:
        """Repo ids of PEFT adapters matching every filter (the Hub ANDs ``filter`` values),
        at most ``limit``; pages are followed through the Hub's Link headers."""
        filters = ["peft", *tags]
        if base_model:
            filters.append(f"base_model:adapter:{base_model}")
        with hub_errors(self._call("list adapters")):
            models = self._api.list_models(
                filter=filters, author=author or None, search=search or None, limit=limit
            )
            return [m.id for m in models]

    def resolve(self, repo_id: str, revision: str | None = None) -> HubSnapshot:
        """Pin ``revision`` (default branch when None) to its commit sha, with the file list."""
        validate_repo_id(repo_id)
        with hub_errors(self._call("resolve revision", repo_id, revision)):
            info = self._api.model_info(
                repo_id, revision=revision, files_metadata=True, timeout=self.timeout_s
            )
        sha = info.sha or ""
        if not _SHA.fullmatch(sha):
            raise HfHubError(
                f"the Hub gave no commit sha for {repo_id}@{revision or DEFAULT_REVISION}",
                code="hf_bad_reply",
            )
        files = {
            s.rfilename: HubFile(s.rfilename, s.size, s.lfs.sha256 if s.lfs else None)
            for s in info.siblings or []
        }
        return HubSnapshot(repo_id, sha, files, tuple(info.tags or ()), revision)

    def download_adapter(
        self, snapshot: HubSnapshot, before_weights: Callable[[bytes], None] | None = None
    ) -> AdapterDownload:
        """``adapter_config.json`` + ``adapter_model.safetensors`` (+ ``README.md``) at the
        pinned sha. Refuses pickle-only and oversized repos before fetching anything; then
        ``before_weights(config_bytes)`` may refuse the adapter before its weights are fetched."""
        config = self.download_config(snapshot)
        with tempfile.TemporaryDirectory(prefix="loradex-hf-") as cache:
            if before_weights is not None:
                before_weights(config)
            weights = self._fetch(snapshot, WEIGHTS_NAME, cache)
            card = self._fetch_card(snapshot, cache)
        return AdapterDownload(snapshot, config, weights, card)

    def download_config(self, snapshot: HubSnapshot) -> bytes:
        """``adapter_config.json`` at the pinned sha, after refusing pickle-only and oversized
        repos from the file listing."""
        _check_files(snapshot, self.max_weights_bytes)
        with tempfile.TemporaryDirectory(prefix="loradex-hf-") as cache:
            return self._fetch(snapshot, CONFIG_NAME, cache)

    def weights_header(self, snapshot: HubSnapshot) -> dict[str, list[int]]:
        """Tensor name -> shape in the revision's ``adapter_model.safetensors``, read from its
        header alone (huggingface_hub's ranged reads: the first 100 kB, not the file)."""
        call = self._call(f"read the header of {WEIGHTS_NAME}", snapshot.repo_id, snapshot.sha)
        with hub_errors(call):
            meta = self._api.parse_safetensors_file_metadata(
                snapshot.repo_id, WEIGHTS_NAME, revision=snapshot.sha, timeout=self.timeout_s
            )
        return {name: list(info.shape) for name, info in meta.tensors.items()}

    def download_card(self, snapshot: HubSnapshot) -> str | None:
        """``README.md`` alone at the pinned sha; None when the repo has none or it is over
        the card size limit."""
        with tempfile.TemporaryDirectory(prefix="loradex-hf-") as cache:
            return self._fetch_card(snapshot, cache)

    def _fetch_card(self, snapshot: HubSnapshot, cache: str) -> str | None:
        card_file = snapshot.files.get(CARD_NAME)
        if card_file is None or (card_file.size or 0) > MAX_CARD_BYTES:
            return None
        return self._fetch(snapshot, CARD_NAME, cache).decode("utf-8", errors="replace")

    def _fetch(self, snapshot: HubSnapshot, name: str, cache: str) -> bytes:
        with hub_errors(self._call(f"download {name}", snapshot.repo_id, snapshot.sha)):
            path = self._api.hf_hub_download(
                snapshot.repo_id,
                name,
                revision=snapshot.sha,
                cache_dir=cache,
                etag_timeout=self.timeout_s,
                tqdm_class=silent_tqdm,  # type: ignore[arg-type]
            )
        data = Path(path).read_bytes()
        _check_arrived(snapshot, snapshot.files[name], data)
        return data

    # -- writing ------------------------------------------------------------------------------
    def push(
        self, repo_id: str, files: Mapping[str, bytes], *, private: bool, message: str
    ) -> PushedCommit:
        """Create the repo if needed (existing repos get a new commit), then commit ``files``
        in one commit."""
        validate_repo_id(repo_id)
        with hub_errors(self._call("create repository", repo_id)):
            self._api.create_repo(repo_id, private=private, exist_ok=True)
        operations = [CommitOperationAdd(name, data) for name, data in files.items()]
        with hub_errors(self._call("commit files", repo_id)):
            info = self._api.create_commit(repo_id, operations=operations, commit_message=message)
        return PushedCommit(repo_id, str(info.oid), str(info.commit_url))


def _check_files(snapshot: HubSnapshot, max_weights: int) -> None:
    where, names = f"{snapshot.repo_id}@{snapshot.sha}", set(snapshot.files)
    if WEIGHTS_NAME not in names:
        pickles = sorted(n for n in names if n.lower().endswith(_PICKLE_SUFFIXES))
        if pickles:
            raise PickleRefusedError(
                f"{where} has only pickled weights ({', '.join(pickles)}), which can execute "
                "code when loaded and are never downloaded; ask the author to publish "
                f"{WEIGHTS_NAME}",
                code="pickle_refused",
                files=pickles,
            )
        raise InvalidAdapterError(
            f"{where} has no {WEIGHTS_NAME} at its top level: not a PEFT adapter repository",
            code="weights_missing",
        )
    if CONFIG_NAME not in names:
        raise InvalidAdapterError(f"{where} has no {CONFIG_NAME}", code="config_missing")
    for name, cap, code in (
        (CONFIG_NAME, MAX_CONFIG_BYTES, "config_invalid"),
        (WEIGHTS_NAME, max_weights, "weights_invalid"),
    ):
        size = snapshot.files[name].size
        if size is not None and size > cap:
            raise InvalidAdapterError(
                f"{where}: {name} is {size} bytes, over the {cap}-byte limit", code=code
            )


def _check_arrived(snapshot: HubSnapshot, expected: HubFile, data: bytes) -> None:
    """What arrived is what the Hub advertised at this sha (size, and LFS sha256 if known)."""
    where = f"{snapshot.repo_id}@{snapshot.sha}/{expected.name}"
    if expected.size is not None and len(data) != expected.size:
        raise HfHubError(
            f"{where}: received {len(data)} bytes, the Hub lists {expected.size}",
            code="hf_size_mismatch",
        )
    if expected.sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected.sha256:
            raise HfHubError(
                f"{where}: sha256 {digest} differs from the Hub's {expected.sha256}",
                code="hf_digest_mismatch",
            )
