"""Content-addressed blob store (sha256), local directory backend.

Write protocol (PERF-RELIABILITY B1, OCI ``blobwriter``): stream into a temp file on the same
filesystem, fsync, verify the digest, ``os.replace`` into ``sha256/ab/<hex>``, fsync the
directory. An existing final path means identical content: the temp is dropped (dedup, and the
write is idempotent). Reads recompute the digest so silent corruption is never served.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from hub.core.errors import BadInputError, BlobCorruptedError, StorageError
from hub.runtime.files import file_lock, fsync_dir, sha256_file

CHUNK = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is 64 lowercase hex chars; anything else could escape the root."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise BadInputError(f"invalid blob digest {digest!r}: expected 64 lowercase hex characters")
    return digest


@runtime_checkable
class BlobStore(Protocol):
    """What the catalog and services need from a blob backend (local dir now, S3 later)."""

    def put_bytes(self, data: bytes, *, expected: str | None = None) -> str: ...
    def put_file(self, path: Path, *, expected: str | None = None) -> str: ...
    def get(self, digest: str) -> bytes: ...
    def open(self, digest: str) -> BinaryIO: ...
    def exists(self, digest: str) -> bool: ...
    def delete(self, digest: str) -> bool: ...
    def iter_digests(self) -> Iterator[str]: ...
    def size(self, digest: str) -> int: ...
    def age_seconds(self, digest: str) -> float: ...
    def referencing(self) -> contextlib.AbstractContextManager[None]: ...
    def collecting(self) -> contextlib.AbstractContextManager[None]: ...
    def verify(self, digest: str) -> bool: ...
    def clean_temp(self, older_than_s: float = 3600.0) -> int: ...


class LocalBlobStore:
    """Blobs under ``root/sha256/ab/<64 hex>``; temp files under ``root/tmp``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._refs_lock = self.root.with_name(self.root.name + ".lock")  # beside the store
        self._objects = self.root / "sha256"
        self._tmp = self.root / "tmp"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    # -- paths -------------------------------------------------------------------------------
    def path(self, digest: str) -> Path:
        """Local path of a blob (it may not exist). Read-only use: never write through it."""
        validate_digest(digest)
        return self._objects / digest[:2] / digest

    # -- writes ------------------------------------------------------------------------------
    def put_bytes(self, data: bytes, *, expected: str | None = None) -> str:
        def write(f: BinaryIO) -> str:
            f.write(data)
            return hashlib.sha256(data).hexdigest()

        return self._put(write, expected)

    def put_file(self, path: Path | str, *, expected: str | None = None) -> str:
        def write(f: BinaryIO) -> str:
            h = hashlib.sha256()
            with open(path, "rb") as src:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    f.write(chunk)
            return h.hexdigest()

        return self._put(write, expected)

    def put_stream(self, stream: BinaryIO, *, expected: str | None = None) -> str:
        def write(f: BinaryIO) -> str:
            h = hashlib.sha256()
            while chunk := stream.read(CHUNK):
                h.update(chunk)
                f.write(chunk)
            return h.hexdigest()

        return self._put(write, expected)

    def _put(self, write: Callable[[BinaryIO], str], expected: str | None) -> str:
        if expected is not None:
            validate_digest(expected)
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-", suffix=".part")
        except OSError as e:
            raise StorageError(f"cannot create a temp file in {self._tmp}: {e}") from e
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                digest = write(f)
                f.flush()
                os.fsync(f.fileno())
            if expected is not None and digest != expected:
                raise BlobCorruptedError(
                    f"content digest {digest} does not match the expected {expected}",
                    code="digest_mismatch",
                    expected=expected,
                    actual=digest,
                )
            # Re-read what hit the disk: the hash above covers what we handed to write(), not
            # what the filesystem kept.
            if sha256_file(tmp) != digest:
                raise StorageError(f"blob {digest} changed while being written to {tmp}")
            self._install(tmp, digest)
            return digest
        except OSError as e:  # disk full, unreadable source...: one error tree for callers
            raise StorageError(f"could not store blob in {self.root}: {e}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _install(self, tmp: Path, digest: str) -> None:
        final = self.path(digest)
        # Identical content already stored: the caller drops the temp (dedup). A stored copy
        # that no longer hashes right is replaced by the fresh, verified one.
        if final.is_file() and sha256_file(final) == digest:
            # Refresh the age: gc spares young unreferenced blobs, and this one is about to be
            # referenced by the caller's catalog row.
            os.utime(final)
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)
        fsync_dir(final.parent)

    # -- reads -------------------------------------------------------------------------------
    def get(self, digest: str) -> bytes:
        """Return the blob's bytes after checking their sha256 equals ``digest``."""
        p = self._existing(digest)
        data = p.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise BlobCorruptedError(
                f"blob {digest} is corrupted on disk (content hashes to {actual})",
                digest=digest,
                actual=actual,
            )
        return data

    def open(self, digest: str) -> BinaryIO:
        """Open for streaming reads. Unverified: call ``verify`` where integrity matters."""
        return open(self._existing(digest), "rb")

    def verify(self, digest: str) -> bool:
        """True if the stored content hashes to ``digest``; raises ``blob_missing`` if absent."""
        return sha256_file(self._existing(digest)) == digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self._existing(digest).stat().st_size

    def age_seconds(self, digest: str) -> float:
        """Seconds since the blob was last written (or re-put): gc's grace-period clock."""
        return max(0.0, time.time() - self._existing(digest).stat().st_mtime)

    def _existing(self, digest: str) -> Path:
        p = self.path(digest)
        if not p.is_file():
            # the catalog names it, so this is a damaged store (exit 1), not a user's typo
            raise StorageError(
                f"blob {digest} is missing from the store: run `loradex verify`",
                code="blob_missing",
                digest=digest,
            )
        return p

    def referencing(self) -> contextlib.AbstractContextManager[None]:
        """Held (shared) by a writer from storing a blob until the catalog row naming it is
        committed: a concurrent ``rm`` of another adapter with the same weights must not find
        the blob unreferenced in between and delete it under the new row."""
        return file_lock(self._refs_lock, exclusive=False)

    def collecting(self) -> contextlib.AbstractContextManager[None]:
        """Held (exclusive) while deciding which blobs nothing references and deleting them."""
        return file_lock(self._refs_lock, exclusive=True)

    # -- maintenance -------------------------------------------------------------------------
    def delete(self, digest: str) -> bool:
        p = self.path(digest)
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(p.parent)
        return True

    def iter_digests(self) -> Iterator[str]:
        for shard in sorted(self._objects.iterdir()):
            if not shard.is_dir() or len(shard.name) != 2:
                continue
            for f in sorted(shard.iterdir()):
                if _DIGEST.fullmatch(f.name) and f.name[:2] == shard.name and f.is_file():
                    yield f.name

    def clean_temp(self, older_than_s: float = 3600.0) -> int:
        """Remove temp files left by crashed writers; young ones may belong to live writers."""
        cutoff = time.time() - older_than_s
        removed = 0
        for f in self._tmp.iterdir():
            try:
                if f.is_file() and f.stat().st_mtime < cutoff:
                    f.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # a concurrent writer finished and renamed it
        return removed
