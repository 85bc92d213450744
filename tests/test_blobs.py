"""LocalBlobStore: content addressing, dedup, digest checks on write and read, hygiene."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from hub.core.errors import BadInputError, BlobCorruptedError, StorageError
from storage.blobs import CHUNK, BlobStore, LocalBlobStore, validate_digest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_is_a_blob_store(store):
    assert isinstance(store, BlobStore)


def test_put_get_roundtrip_and_layout(store, tmp_path):
    data = b"hello adapter"
    digest = store.put_bytes(data)
    assert digest == sha(data)
    assert store.path(digest) == tmp_path / "blobs" / "sha256" / digest[:2] / digest
    assert store.exists(digest) and store.size(digest) == len(data)
    assert store.get(digest) == data
    with store.open(digest) as f:
        assert f.read() == data
    assert store.verify(digest)


def test_identical_content_stored_once(store):
    d1 = store.put_bytes(b"same")
    d2 = store.put_bytes(b"same")
    assert d1 == d2
    assert list(store.iter_digests()) == [d1]
    assert not list((store.root / "tmp").iterdir())


def test_put_file_streams_large_file(store, tmp_path):
    src = tmp_path / "big.bin"
    data = os.urandom(3 * CHUNK + 123)
    src.write_bytes(data)
    digest = store.put_file(src)
    assert digest == sha(data)
    assert store.get(digest) == data


def test_expected_digest_mismatch_is_refused_and_leaves_nothing(store):
    with pytest.raises(BlobCorruptedError) as e:
        store.put_bytes(b"abc", expected=sha(b"abd"))
    assert e.value.code == "digest_mismatch"
    assert list(store.iter_digests()) == []
    assert not list((store.root / "tmp").iterdir())
    assert store.put_bytes(b"abc", expected=sha(b"abc")) == sha(b"abc")


def test_corruption_detected_on_read(store):
    digest = store.put_bytes(b"precious weights")
    path = store.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"precious weighTs")  # same size, one byte flipped
    with pytest.raises(BlobCorruptedError):
        store.get(digest)
    assert not store.verify(digest)


def test_rewrite_repairs_a_corrupted_blob(store):
    digest = store.put_bytes(b"payload")
    os.chmod(store.path(digest), 0o644)
    store.path(digest).write_bytes(b"garbage")
    assert store.put_bytes(b"payload") == digest
    assert store.get(digest) == b"payload"


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc/passwd",
        "A" * 64,
        "a" * 63,
        "a" * 65,
        "g" * 64,
        "",
        "/" + "a" * 63,
        "a" * 63 + "\n",
    ],
)
def test_bad_digests_rejected(store, bad):
    with pytest.raises(BadInputError):
        validate_digest(bad)
    with pytest.raises(BadInputError):
        store.get(bad)
    with pytest.raises(BadInputError):
        store.exists(bad)
    with pytest.raises(BadInputError):
        store.delete(bad)


def test_missing_blob(store):
    with pytest.raises(StorageError) as exc:
        store.get("0" * 64)
    assert exc.value.code == "blob_missing" and "loradex verify" in exc.value.message
    assert not store.exists("0" * 64)
    assert store.delete("0" * 64) is False


def test_delete_and_iter(store):
    digests = sorted(store.put_bytes(bytes([i]) * 10) for i in range(5))
    assert sorted(store.iter_digests()) == digests
    assert store.delete(digests[0]) is True
    assert sorted(store.iter_digests()) == digests[1:]


def test_iter_ignores_foreign_files(store):
    digest = store.put_bytes(b"x")
    (store.root / "sha256" / "zz").mkdir()
    (store.root / "sha256" / digest[:2] / "notes.txt").write_text("hi")
    wrong_shard = ("ff" if digest[:2] != "ff" else "ee") + digest[2:]
    (store.root / "sha256" / digest[:2] / wrong_shard).write_bytes(b"misplaced")
    assert list(store.iter_digests()) == [digest]


def test_clean_temp_removes_only_old_files(store):
    tmp = store.root / "tmp"
    old, young = tmp / "put-old.part", tmp / "put-young.part"
    old.write_bytes(b"crashed writer")
    young.write_bytes(b"live writer")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert store.clean_temp(older_than_s=3600) == 1
    assert not old.exists() and young.exists()


def test_concurrent_puts_of_same_content(store):
    data = os.urandom(CHUNK + 7)
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(store.put_bytes(data))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(out) == {sha(data)}
    assert store.get(sha(data)) == data
    assert not list((store.root / "tmp").iterdir())


def test_unreadable_source_is_a_storage_error(store, tmp_path):
    with pytest.raises(StorageError):
        store.put_file(tmp_path / "missing.bin")
    assert not list((store.root / "tmp").iterdir())


def test_age_resets_when_content_is_put_again(store):
    digest = store.put_bytes(b"old content")
    past = time.time() - 7200
    os.utime(store.path(digest), (past, past))
    assert store.age_seconds(digest) > 7000
    store.put_bytes(b"old content")  # a concurrent add dedups onto it: gc must spare it
    assert store.age_seconds(digest) < 60
