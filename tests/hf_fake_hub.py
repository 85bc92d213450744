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

Faults (``fail``, ``drop``, ``stall``) make any route answer an error status, close the socket
part-way through a download body, or wait before answering.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")
BAD_TOKEN_MESSAGE = "Invalid credentials in Authorization header"
_FRONT_MATTER = re.compile(r"^\s*---\r?\n(.*?)\r?\n---", re.S)


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


class HubError(Exception):
    def __init__(self, status: int, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id


def front_matter(text: str) -> dict[str, Any]:
    match = _FRONT_MATTER.match(text)
    data = yaml.safe_load(match.group(1)) if match else None
    return data if isinstance(data, dict) else {}


class FakeHub:
    def __init__(self, root: Path, *, tokens: dict[str, str] | None = None, page_size: int = 50):
        self.root = Path(root)
        self.tokens = dict(tokens or {})  # token -> user name
        self.page_size = page_size
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str]] = []
        self.ranges: list[str] = []  # Range headers received (resumed downloads)
        self.on_request: Callable[[str, str], None] | None = None  # (method, path) hook
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def handle(self) -> None:
        # The client gave up (a timeout test) or we dropped the socket on purpose.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    # -- plumbing -----------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, self.query = unquote(parts.path), parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.hub.log.append((method, self.path))
        if self.hub.on_request is not None:
            self.hub.on_request(method, path)
        fault = self.hub.fault_for(method, path)
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)
        if fault is not None and fault.status is not None:
            self._json({"error": f"injected HTTP {fault.status}"}, fault.status, **fault.headers)
            return
        self.drop_after = fault.drop_after if fault is not None else None
        self.corrupt = fault is not None and fault.corrupt
        if self.headers.get("Range"):
            self.hub.ranges.append(self.headers["Range"])
        try:
            self._route(method, path)
        except HubError as exc:
            self._json({"error": exc.message}, exc.status, **exc.headers)

    def _route(self, method: str, path: str) -> None:
        self.user = self._user()
        for verbs, pattern, name in ROUTES:
            match = pattern.fullmatch(path)
            if method in verbs and match:
                getattr(self, name)(method, **match.groupdict())
                return
        raise HubError(404, f"no route for {method} {path}")

    def _user(self) -> str | None:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        if token not in self.hub.tokens:
            raise HubError(401, BAD_TOKEN_MESSAGE, **{"X-Error-Message": BAD_TOKEN_MESSAGE})
        return self.hub.tokens[token]

    def _json(self, doc: Any, status: int = 200, **headers: str) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has no body, even an error
            self.wfile.write(data)

    def _repo(self, repo_id: str) -> dict[str, Any]:
        """The repo's meta, or the Hub's 'not found' (also for private repos of others)."""
        hub = self.hub
        if not hub.exists(repo_id) or (
            hub.meta(repo_id)["private"] and self.user != repo_id.split("/")[0]
        ):
            raise HubError(404, "Repository not found", **{"X-Error-Code": "RepoNotFound"})
        return hub.meta(repo_id)

    def _sha(self, repo_id: str, revision: str) -> str:
        sha = self.hub.resolve_rev(repo_id, revision)
        if sha is None:
            raise HubError(404, "Invalid rev id", **{"X-Error-Code": "RevisionNotFound"})
        return sha

    def _writer(self, repo_id: str) -> None:
        if self.user is None:
            raise HubError(401, "You must be authenticated to write")
        if self.user != repo_id.split("/")[0]:
            raise HubError(403, f"{self.user} may not write to {repo_id}")

    # -- routes -------------------------------------------------------------------------------
    def list_models(self, method: str) -> None:
        hub, q = self.hub, self.query
        wanted = q.get("filter", [])
        author = (q.get("author") or [None])[0]
        search = (q.get("search") or [""])[0].lower()
        limit = int((q.get("limit") or [1000])[0])
        start = int((q.get("cursor") or [0])[0])
        rows = []
        for meta_path in sorted(hub.root.glob("*/*/meta.json")):
            repo_id = meta_path.parent.relative_to(hub.root).as_posix()
            meta = hub.meta(repo_id)
            if meta["private"] and self.user != repo_id.split("/")[0]:
                continue
            tags = hub.tags_of(repo_id, hub.refs(repo_id)["main"])
            if author and repo_id.split("/")[0] != author:
                continue
            if search not in repo_id.lower() or not set(wanted) <= set(tags):
                continue
            rows.append(_listing_row(repo_id, meta, tags))
        page = min(limit, hub.page_size)
        headers = {}
        if start + page < len(rows):
            params = {k: v for k, v in q.items() if k != "cursor"}
            nxt = urlencode({**params, "cursor": [str(start + page)]}, doseq=True)
            headers["Link"] = f'<{hub.url}/api/models?{nxt}>; rel="next"'
        self._json(rows[start : start + page], **headers)

    def model_info(self, method: str, owner: str, name: str, revision: str = "main") -> None:
        repo_id = f"{owner}/{name}"
        meta = self._repo(repo_id)
        sha = self._sha(repo_id, revision)
        files = self.hub.files_at(repo_id, sha)
        card = front_matter(files.get("README.md", b"").decode("utf-8", "replace"))
        blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        doc = {
            **_listing_row(repo_id, meta, self.hub.tags_of(repo_id, sha)),
            "sha": sha,
            "lastModified": meta["createdAt"],
            "disabled": False,
            "gated": False,
            "cardData": card or None,
            "siblings": [_sibling(p, d, blobs) for p, d in sorted(files.items())],
        }
        self._json(doc)

    def resolve(self, method: str, owner: str, name: str, revision: str, path: str) -> None:
        repo_id = f"{owner}/{name}"
        self._repo(repo_id)
        sha = self._sha(repo_id, revision)
        data = self.hub.files_at(repo_id, sha).get(path)
        if data is None:
            raise HubError(
                404, "Entry not found", **{"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}
            )
        etag = (
            hashlib.sha256(data).hexdigest() if path.endswith(LFS_SUFFIXES) else git_blob_sha1(data)
        )
        if self.corrupt and method == "GET":
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        start = _range_start(self.headers.get("Range"))
        status = 206 if start else 200
        body = data[start:]
        self.send_response(status)
        self.send_header("X-Repo-Commit", sha)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if method == "HEAD":
            return
        if self.drop_after is not None:  # a dropped connection part-way through the body
            self.wfile.write(body[: self.drop_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def create_repo(self, method: str) -> None:
        doc = json.loads(self.body or b"{}")
        owner = doc.get("organization") or self.user
        repo_id = f"{owner}/{doc['name']}"
        self._writer(repo_id)
        if self.hub.exists(repo_id):
            raise HubError(409, "You already created this model repo")
        private = doc.get("visibility") == "private" or bool(doc.get("private"))
        self.hub.create(repo_id, private=private)
        self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def validate_yaml(self, method: str) -> None:
        content = json.loads(self.body or b"{}").get("content", "")
        match = _FRONT_MATTER.match(content)
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as exc:
            data = exc
        if not isinstance(data, dict):
            self._json({"errors": [{"message": f"bad metadata: {data}"}]}, 400)
            return
        self._json({"errors": [], "warnings": []})

    def preupload(self, method: str, owner: str, name: str, revision: str) -> None:
        repo_id = f"{owner}/{name}"
        self._repo(repo_id)
        self._writer(repo_id)
        files = json.loads(self.body)["files"]
        modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
        self._json({"files": modes, "commitOid": self.hub.refs(repo_id).get("main")})

    def commit(self, method: str, owner: str, name: str, revision: str) -> None:
        repo_id = f"{owner}/{name}"
        self._repo(repo_id)
        self._writer(repo_id)
        if revision != "main":
            raise HubError(400, "the fake Hub commits to main only")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        changes: dict[str, bytes | None] = {}
        for item in lines:
            value = item["value"]
            if item["key"] == "file":
                changes[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] in ("deletedFile", "deletedFolder"):
                changes[value["path"]] = None
            elif item["key"] != "header":
                raise HubError(400, f"the fake Hub does not support {item['key']!r} operations")
        sha = self.hub.commit(repo_id, changes, message=header["summary"])
        url = f"{self.hub.url}/{repo_id}/commit/{sha}"
        self._json({"success": True, "commitOid": sha, "commitUrl": url, "hookOutput": ""})


_NAME = r"[^/]+"
ROUTES = [
    (("GET",), re.compile(r"/api/models"), "list_models"),
    (("GET",), re.compile(rf"/api/models/(?P<owner>{_NAME})/(?P<name>{_NAME})"), "model_info"),
    (
        ("GET",),
        re.compile(rf"/api/models/(?P<owner>{_NAME})/(?P<name>{_NAME})/revision/(?P<revision>.+)"),
        "model_info",
    ),
    (
        ("GET", "HEAD"),
        re.compile(
            rf"/(?P<owner>{_NAME})/(?P<name>{_NAME})/resolve/(?P<revision>{_NAME})/(?P<path>.+)"
        ),
        "resolve",
    ),
    (("POST",), re.compile(r"/api/repos/create"), "create_repo"),
    (("POST",), re.compile(r"/api/validate-yaml"), "validate_yaml"),
    (
        ("POST",),
        re.compile(rf"/api/models/(?P<owner>{_NAME})/(?P<name>{_NAME})/preupload/(?P<revision>.+)"),
        "preupload",
    ),
    (
        ("POST",),
        re.compile(rf"/api/models/(?P<owner>{_NAME})/(?P<name>{_NAME})/commit/(?P<revision>.+)"),
        "commit",
    ),
]


def _listing_row(repo_id: str, meta: dict[str, Any], tags: list[str]) -> dict[str, Any]:
    return {
        "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],  # noqa: S324 - an opaque id
        "id": repo_id,
        "modelId": repo_id,
        "author": repo_id.split("/")[0],
        "private": meta["private"],
        "likes": 0,
        "downloads": 0,
        "tags": tags,
        "library_name": "peft" if "peft" in tags else None,
        "createdAt": meta["createdAt"],
    }


def _sibling(path: str, data: bytes, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": path}
    row: dict[str, Any] = {"rfilename": path, "size": len(data), "blobId": git_blob_sha1(data)}
    if path.endswith(LFS_SUFFIXES):
        row["lfs"] = {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "pointerSize": 134,
        }
    return row


def _range_start(header: str | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match.group(1)) if match else 0
