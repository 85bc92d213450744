"""A local Hugging Face Hub for tests: the subset of the Hub's HTTP API that the real
``huggingface_hub`` client uses to list models, read model info at a revision, resolve (HEAD and
GET, with Range) files, create repos, preupload and commit. Point the client at it with
``HfApi(endpoint=hub.url)`` / ``LORADEX_HF_ENDPOINT``.

Repositories live in a temporary directory, one folder per repo::

    <root>/<owner>/<name>/meta.json          private flag, extra tags, commit history
    <root>/<owner>/<name>/refs.json          {"main": "<sha>"}
    <root>/<owner>/<name>/commits/<sha>/...  the full tree of each commit

Wire details follow huggingface_hub 2.x (``utils/_http.py``, ``file_download.py``,
``_commit_api.py``, ``hf_api.py``): ``X-Repo-Commit`` and ``ETag`` on resolve, ``X-Error-Code``
(RepoNotFound, RevisionNotFound, EntryNotFound) on 404s, ``X-Error-Message`` "Invalid credentials
in Authorization header" on a bad token, GitHub-style ``Link`` headers for pages, preupload
answering ``regular`` so commits carry file contents inline as base64 NDJSON.

Faults (``fail``, ``drop``, ``corrupt``, ``stall``) make any route answer an error status, close
the socket part-way through a download body, flip a byte of a served file, or wait before
answering. The request handler lives in ``tests/hf_fake_hub_http.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.hf_fake_hub_http import Handler, front_matter


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None
    corrupt: bool = False  # flip the last byte of a served file
    delay_s: float = 0.0
    times: int | None = None  # None: every matching request
    hits: int = 0


class FakeHub:
    def __init__(self, root: Path, *, tokens: dict[str, str] | None = None, page_size: int = 50):
        self.root = Path(root)
        self.tokens = dict(tokens or {})  # token -> user name
        self.page_size = page_size
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str]] = []
        self.served: list[tuple[str, int]] = []  # (file path, body bytes) of each file GET
        self.ranges: list[str] = []  # Range headers received (resumed downloads)
        self.on_request: Callable[[str, str], None] | None = None  # (method, path) hook
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeHub:
        handler = type("Handler", (Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- content ------------------------------------------------------------------------------
    def _dir(self, repo_id: str) -> Path:
        return self.root / repo_id

    def exists(self, repo_id: str) -> bool:
        return (self._dir(repo_id) / "meta.json").exists()

    def meta(self, repo_id: str) -> dict[str, Any]:
        return dict(json.loads((self._dir(repo_id) / "meta.json").read_text()))

    def refs(self, repo_id: str) -> dict[str, str]:
        return dict(json.loads((self._dir(repo_id) / "refs.json").read_text()))

    def create(self, repo_id: str, *, private: bool = False, tags: tuple[str, ...] = ()) -> str:
        with self._lock:
            d = self._dir(repo_id)
            d.mkdir(parents=True)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            meta = {"private": private, "tags": list(tags), "history": [], "createdAt": now}
            (d / "meta.json").write_text(json.dumps(meta))
            (d / "refs.json").write_text("{}")
            return self.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs\n"})

    def add_repo(self, repo_id: str, files: dict[str, bytes], **kw: Any) -> str:
        self.create(repo_id, **kw)
        return self.commit(repo_id, files, message="add files")

    def commit(
        self, repo_id: str, files: dict[str, bytes | None], *, message: str = "update"
    ) -> str:
        """A new commit on main: ``files`` added/replaced (None deletes). Returns its sha."""
        with self._lock:
            refs = self.refs(repo_id)
            parent = refs.get("main", "")
            tree = self.files_at(repo_id, parent) if parent else {}
            for path, data in files.items():
                if data is None:
                    tree.pop(path, None)
                else:
                    tree[path] = data
            digest = hashlib.sha1(f"{parent}\n{message}\n".encode())  # noqa: S324 - git-like id
            for path in sorted(tree):
                digest.update(f"{path}\0{hashlib.sha256(tree[path]).hexdigest()}\n".encode())
            sha = digest.hexdigest()
            base = self._dir(repo_id) / "commits" / sha
            for path, data in tree.items():
                (base / path).parent.mkdir(parents=True, exist_ok=True)
                (base / path).write_bytes(data)
            base.mkdir(parents=True, exist_ok=True)
            refs["main"] = sha
            (self._dir(repo_id) / "refs.json").write_text(json.dumps(refs))
            meta = self.meta(repo_id)
            meta["history"].append({"sha": sha, "message": message})
            (self._dir(repo_id) / "meta.json").write_text(json.dumps(meta))
            return sha

    def resolve_rev(self, repo_id: str, revision: str) -> str | None:
        refs = self.refs(repo_id)
        if revision in refs:
            return refs[revision]
        shas = [h["sha"] for h in self.meta(repo_id)["history"]]
        return revision if revision in shas else None

    def files_at(self, repo_id: str, sha: str) -> dict[str, bytes]:
        base = self._dir(repo_id) / "commits" / sha
        return {
            p.relative_to(base).as_posix(): p.read_bytes()
            for p in sorted(base.rglob("*"))
            if p.is_file()
        }

    def tags_of(self, repo_id: str, sha: str) -> list[str]:
        """The Hub derives tags from the card and the files; the extra ones are set at create."""
        files = self.files_at(repo_id, sha)
        card = front_matter(files.get("README.md", b"").decode("utf-8", "replace"))
        tags = set(self.meta(repo_id)["tags"])
        tags |= {str(t) for t in card.get("tags") or [] if isinstance(t, str)}
        if "adapter_config.json" in files:
            tags.add("peft")
            try:
                config = json.loads(files["adapter_config.json"])
            except ValueError:
                config = {}
            base = card.get("base_model") or (
                config.get("base_model_name_or_path") if isinstance(config, dict) else None
            )
            if isinstance(base, str):
                tags |= {f"base_model:{base}", f"base_model:adapter:{base}"}
        if any(p.endswith(".safetensors") for p in files):
            tags.add("safetensors")
        if isinstance(card.get("license"), str):
            tags.add(f"license:{card['license']}")
        return sorted(tags)

    # -- faults -------------------------------------------------------------------------------
    def fail(
        self, method: str, path: str, status: int, *, times: int | None = None, **headers: str
    ) -> None:
        self.faults.append(Fault(method, re.compile(path), status, headers, times=times))

    def drop(self, path: str, after_bytes: int, *, times: int | None = None) -> None:
        self.faults.append(Fault("GET", re.compile(path), drop_after=after_bytes, times=times))

    def corrupt(self, path: str, *, times: int | None = None) -> None:
        self.faults.append(Fault("GET", re.compile(path), corrupt=True, times=times))

    def stall(self, method: str, path: str, seconds: float, *, times: int | None = None) -> None:
        self.faults.append(Fault(method, re.compile(path), delay_s=seconds, times=times))

    def fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method in (method, "*") and fault.pattern.search(path):
                    if fault.times is not None and fault.hits >= fault.times:
                        continue
                    fault.hits += 1
                    return fault
        return None

    def requests(self, method: str | None = None, contains: str = "") -> list[str]:
        return [p for m, p in self.log if (method is None or m == method) and contains in p]
