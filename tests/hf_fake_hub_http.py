"""The HTTP side of the fake Hub (``tests/hf_fake_hub.py``): one request handler whose routes
answer like the Hugging Face Hub for the calls huggingface_hub 2.x makes (see that module)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

if TYPE_CHECKING:
    from tests.hf_fake_hub import FakeHub

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")
BAD_TOKEN_MESSAGE = "Invalid credentials in Authorization header"
_FRONT_MATTER = re.compile(r"^\s*---\r?\n(.*?)\r?\n---", re.S)


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


class Handler(BaseHTTPRequestHandler):
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
        start, end = _range(self.headers.get("Range"), len(data))
        partial = (start, end) != (0, len(data) - 1)
        body = data[start : end + 1]
        if method == "GET":
            self.hub.served.append((path, len(body)))
        self.send_response(206 if partial else 200)
        self.send_header("X-Repo-Commit", sha)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
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
        if self.hub.exists(repo_id):  # the Hub's 409 names the repo: create_repo(exist_ok) reads it
            error = "You already created this model repo"
            self._json({"error": error, "url": f"{self.hub.url}/{repo_id}"}, 409)
            return
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


def _range(header: str | None, size: int) -> tuple[int, int]:
    """(first, last) byte of a ``Range: bytes=A-`` or ``bytes=A-B`` request; the whole file
    for no or another kind of range (as a server may ignore what it does not support)."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", header or "")
    if match is None:
        return 0, size - 1
    start = min(int(match[1]), size)
    return start, min(int(match[2]), size - 1) if match[2] else size - 1
