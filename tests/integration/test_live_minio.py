"""The minio object store and the job's s3:// transfers against a real MinIO or S3 endpoint.

Runs when `MINIO_SERVER_URL` (with `MINIO_ACCESS_KEY` and `MINIO_SECRET_KEY`; `MINIO_VERIFY_TLS=false` to
skip certificate checks) names one, in temporary buckets that it removes afterwards; skipped otherwise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio
from minio.deleteobjects import DeleteObject

from nulog import remote
from training_controller.adapters.storage.minio import MinioObjectStore
from training_controller.core.errors import StorageAccessDenied

MiB = 1024 * 1024

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not os.environ.get("MINIO_SERVER_URL"), reason="MINIO_SERVER_URL is not set"),
]


def _verify_tls() -> bool:
    return os.environ.get("MINIO_VERIFY_TLS", "").strip().lower() not in ("0", "false", "no", "off")


@pytest.fixture(scope="module")
def raw() -> Minio:
    try:
        return remote.client_from_env()
    except remote.RemoteConfigError as e:
        pytest.fail(str(e))


@pytest.fixture
def store() -> MinioObjectStore:
    return MinioObjectStore(
        os.environ["MINIO_SERVER_URL"],
        access_key=os.environ["MINIO_ACCESS_KEY"],
        secret_key=os.environ["MINIO_SECRET_KEY"],
        verify_tls=_verify_tls(),
        part_size=5 * MiB,
    )


@pytest.fixture
def buckets(raw: Minio) -> Iterator[list[str]]:
    """Two fresh bucket names; whatever they hold afterwards is deleted with them."""
    names = [f"tc-live-{uuid.uuid4().hex[:12]}" for _ in range(2)]
    yield names
    for name in names:
        if not raw.bucket_exists(name):
            continue
        objects = [DeleteObject(o.object_name) for o in raw.list_objects(name, recursive=True)]
        errors = list(raw.remove_objects(name, objects))
        assert not errors, errors
        raw.remove_bucket(name)


async def test_the_store_round_trips_lists_copies_and_reports_missing_keys(
    store: MinioObjectStore, raw: Minio, buckets: list[str], tmp_path: Path
):
    bucket, other = buckets
    model = tmp_path / "nulog_model.pt"
    model.write_bytes(os.urandom(12 * MiB))

    assert await store.ping() is True
    await store.put_file(bucket, "job-1/nulog_model.pt", model)
    await store.put_bytes(bucket, "job-1/vocab.txt", b"<PAD>\nfoo\n")
    await store.copy(bucket, "job-1/nulog_model.pt", bucket, "nulog_model_latest.pt")
    await store.copy(bucket, "job-1/vocab.txt", other, "vocab.txt")

    assert raw.stat_object(bucket, "job-1/nulog_model.pt").etag.endswith("-3")
    assert await store.list(bucket) == ["job-1/nulog_model.pt", "job-1/vocab.txt", "nulog_model_latest.pt"]
    assert await store.list(bucket, "job-1/") == ["job-1/nulog_model.pt", "job-1/vocab.txt"]
    assert await store.get_bytes(bucket, "nulog_model_latest.pt") == model.read_bytes()
    assert await store.get_bytes(other, "vocab.txt") == b"<PAD>\nfoo\n"
    assert await store.exists(bucket, "job-1/vocab.txt") is True
    assert await store.exists(bucket, "job-1") is False
    with pytest.raises(KeyError):
        await store.get_bytes(bucket, "job-1/absent")
    with pytest.raises(KeyError):
        await store.copy(bucket, "job-1/absent", bucket, "x")


async def test_wrong_credentials_are_refused_without_leaking_the_secret(buckets: list[str]):
    wrong = "not-the-secret-" + uuid.uuid4().hex
    store = MinioObjectStore(
        os.environ["MINIO_SERVER_URL"],
        access_key=os.environ["MINIO_ACCESS_KEY"],
        secret_key=wrong,
        verify_tls=_verify_tls(),
    )

    with pytest.raises(StorageAccessDenied) as info:
        await store.put_bytes(buckets[0], "k", b"x")
    assert wrong not in str(info.value)
    assert os.environ["MINIO_SECRET_KEY"] not in str(info.value)


def test_the_jobs_upload_and_download_round_trip(raw: Minio, buckets: list[str], tmp_path: Path):
    bucket = buckets[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "nulog_model.pt").write_bytes(os.urandom(6 * MiB))
    (out / "vocab.txt").write_text("foo\n")

    keys = remote.upload_dir(out, f"s3://{bucket}/job-2", part_size=5 * MiB)

    assert keys == ["job-2/nulog_model.pt", "job-2/vocab.txt"]
    for name in ("nulog_model.pt", "vocab.txt"):
        got = remote.download(f"s3://{bucket}/job-2/{name}", tmp_path / "back")
        assert got.read_bytes() == (out / name).read_bytes()
