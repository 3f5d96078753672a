"""The local object store: objects as files under a root, written atomically, never outside the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from training_controller.adapters.storage.local import LocalObjectStore
from training_controller.core.errors import InvalidRequest


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "root")


async def test_put_bytes_then_get_bytes_returns_the_same_bytes(store: LocalObjectStore):
    await store.put_bytes("models", "job/a.bin", b"\x00\x01payload")

    assert await store.get_bytes("models", "job/a.bin") == b"\x00\x01payload"
    assert (store.root / "models" / "job" / "a.bin").read_bytes() == b"\x00\x01payload"


async def test_put_bytes_replaces_an_existing_object(store: LocalObjectStore):
    await store.put_bytes("b", "k", b"old")
    await store.put_bytes("b", "k", b"new")

    assert await store.get_bytes("b", "k") == b"new"


async def test_put_file_uploads_a_local_file(store: LocalObjectStore, tmp_path: Path):
    source = tmp_path / "data.gz"
    source.write_bytes(bytes(range(256)) * 10)

    await store.put_file("training", "job/data.gz", source)

    assert await store.get_bytes("training", "job/data.gz") == source.read_bytes()


async def test_exists(store: LocalObjectStore):
    await store.put_bytes("b", "dir/k", b"x")

    assert await store.exists("b", "dir/k") is True
    assert await store.exists("b", "dir") is False  # a prefix is not an object
    assert await store.exists("b", "other") is False
    assert await store.exists("nobucket", "k") is False


async def test_list_with_prefix_is_sorted_and_hides_temporary_files(store: LocalObjectStore):
    for key in ("j2/vocab.txt", "j1/model.pt", "j1/vocab.txt", "top.txt"):
        await store.put_bytes("b", key, key.encode())
    (store.root / "b" / "j1" / ".partial-abc123").write_bytes(b"half")

    assert await store.list("b") == ["j1/model.pt", "j1/vocab.txt", "j2/vocab.txt", "top.txt"]
    assert await store.list("b", "j1/") == ["j1/model.pt", "j1/vocab.txt"]
    assert await store.list("b", "j") == ["j1/model.pt", "j1/vocab.txt", "j2/vocab.txt"]
    assert await store.list("b", "zzz") == []
    assert await store.list("empty-bucket") == []


async def test_writes_leave_no_temporary_files(store: LocalObjectStore):
    await store.put_bytes("b", "k", b"x")
    await store.copy("b", "k", "b", "k2")

    assert sorted(p.name for p in (store.root / "b").iterdir()) == ["k", "k2"]


async def test_copy_within_and_across_buckets(store: LocalObjectStore):
    await store.put_bytes("models", "job/model.pt", b"weights")

    await store.copy("models", "job/model.pt", "models", "model_latest.pt")
    await store.copy("models", "job/model.pt", "backup", "x/model.pt")

    assert await store.get_bytes("models", "model_latest.pt") == b"weights"
    assert await store.get_bytes("backup", "x/model.pt") == b"weights"
    assert await store.get_bytes("models", "job/model.pt") == b"weights"


async def test_copy_of_a_missing_object_raises_key_error(store: LocalObjectStore):
    with pytest.raises(KeyError):
        await store.copy("b", "missing", "b", "dst")
    assert await store.exists("b", "dst") is False


async def test_get_of_a_missing_key_raises_key_error_naming_it(store: LocalObjectStore):
    await store.put_bytes("b", "present", b"x")

    with pytest.raises(KeyError, match="b/absent"):
        await store.get_bytes("b", "absent")


@pytest.mark.parametrize(("bucket", "key"), [("b", "../../x"), ("..", "x"), ("b", "/etc/passwd"), ("b", "a/../../../x")])
async def test_names_that_escape_the_root_raise_invalid_request(store: LocalObjectStore, bucket: str, key: str):
    with pytest.raises(InvalidRequest, match="leaves its bucket"):
        await store.put_bytes(bucket, key, b"x")
    with pytest.raises(InvalidRequest):
        await store.get_bytes(bucket, key)
    with pytest.raises(InvalidRequest):
        store.uri(bucket, key)
    assert not (store.root.parent / "x").exists()


async def test_key_that_escapes_its_bucket_raises_invalid_request(store: LocalObjectStore):
    with pytest.raises(InvalidRequest):
        await store.put_bytes("b", "../x", b"x")


async def test_uri_is_a_path_under_the_root(store: LocalObjectStore):
    uri = store.uri("models", "job/model.pt")

    assert Path(uri) == (store.root / "models" / "job" / "model.pt").resolve()
    assert Path(uri).is_relative_to(store.root.resolve())
    assert Path(store.uri("models", "job")) == (store.root / "models" / "job").resolve()


async def test_ping_reports_whether_the_root_is_a_writable_directory(store: LocalObjectStore):
    assert await store.ping() is False
    store.root.mkdir()
    assert await store.ping() is True
