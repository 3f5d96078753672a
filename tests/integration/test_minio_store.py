"""The minio object store against a real S3 endpoint: moto's threaded server, spoken to by the official client.

Moto's backends are shared by the whole process, so every test works in buckets of its own.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import socket
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from minio import Minio
from pydantic import SecretStr

from training_controller.adapters.logs.files import FilesLogSource
from training_controller.adapters.storage.minio import MinioObjectStore, parse_endpoint
from training_controller.core.errors import (
    InvalidRequest,
    PermanentError,
    StorageAccessDenied,
    StorageUnavailable,
    TemporaryError,
)
from training_controller.core.export import export_training_data
from training_controller.core.queries import Interval, LogQuery

MiB = 1024 * 1024
ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-that-must-not-leak"


@pytest.fixture
def bucket() -> str:
    return f"tc-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(s3_url: str) -> MinioObjectStore:
    return MinioObjectStore(
        s3_url, access_key=SecretStr(ACCESS_KEY), secret_key=SecretStr(SECRET_KEY), part_size=5 * MiB
    )


@pytest.fixture
def raw(s3_url: str) -> Minio:
    """The official client, straight, to look at what the store wrote."""
    host, secure = parse_endpoint(s3_url)
    return Minio(host, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=secure)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_put_bytes_creates_the_missing_bucket_and_get_bytes_returns_the_bytes(
    store: MinioObjectStore, raw: Minio, bucket: str
):
    assert not raw.bucket_exists(bucket)

    await store.put_bytes(bucket, "job/a.bin", b"\x00\x01payload")

    assert raw.bucket_exists(bucket)
    assert await store.get_bytes(bucket, "job/a.bin") == b"\x00\x01payload"


async def test_put_bytes_replaces_an_existing_object(store: MinioObjectStore, bucket: str):
    await store.put_bytes(bucket, "k", b"old")
    await store.put_bytes(bucket, "k", b"new")

    assert await store.get_bytes(bucket, "k") == b"new"


async def test_a_file_larger_than_one_part_goes_up_as_multipart_and_round_trips(
    store: MinioObjectStore, raw: Minio, bucket: str, tmp_path: Path
):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(12 * MiB))

    await store.put_file(bucket, "job/big.bin", source)

    # An S3 ETag of a multipart object is md5-of-part-md5s followed by "-<number of parts>".
    assert raw.stat_object(bucket, "job/big.bin").etag.endswith("-3")
    assert await store.get_bytes(bucket, "job/big.bin") == source.read_bytes()


async def test_a_small_file_goes_up_in_one_request(
    store: MinioObjectStore, raw: Minio, bucket: str, tmp_path: Path
):
    source = tmp_path / "vocab.txt"
    source.write_text("a\nb\n")

    await store.put_file(bucket, "job/vocab.txt", source)

    assert "-" not in raw.stat_object(bucket, "job/vocab.txt").etag
    assert await store.get_bytes(bucket, "job/vocab.txt") == b"a\nb\n"


async def test_put_file_of_a_missing_local_file_raises_storage_unavailable_naming_it(
    store: MinioObjectStore, bucket: str, tmp_path: Path
):
    with pytest.raises(StorageUnavailable, match="absent.gz"):
        await store.put_file(bucket, "k", tmp_path / "absent.gz")


async def test_list_with_prefix_is_sorted(store: MinioObjectStore, bucket: str):
    for key in ("j2/vocab.txt", "j1/model.pt", "j1/vocab.txt", "top.txt"):
        await store.put_bytes(bucket, key, key.encode())

    assert await store.list(bucket) == ["j1/model.pt", "j1/vocab.txt", "j2/vocab.txt", "top.txt"]
    assert await store.list(bucket, "j1/") == ["j1/model.pt", "j1/vocab.txt"]
    assert await store.list(bucket, "j") == ["j1/model.pt", "j1/vocab.txt", "j2/vocab.txt"]
    assert await store.list(bucket, "zzz") == []
    assert await store.list(f"{bucket}-missing") == []


async def test_exists(store: MinioObjectStore, bucket: str):
    await store.put_bytes(bucket, "dir/k", b"x")

    assert await store.exists(bucket, "dir/k") is True
    assert await store.exists(bucket, "dir") is False  # a prefix is not an object
    assert await store.exists(bucket, "other") is False
    assert await store.exists(f"{bucket}-missing", "k") is False


async def test_get_of_a_missing_key_or_bucket_raises_key_error_naming_it(
    store: MinioObjectStore, bucket: str
):
    await store.put_bytes(bucket, "present", b"x")

    with pytest.raises(KeyError, match=f"{bucket}/absent"):
        await store.get_bytes(bucket, "absent")
    with pytest.raises(KeyError, match=f"{bucket}-missing/present"):
        await store.get_bytes(f"{bucket}-missing", "present")


async def test_copy_to_the_latest_names_gives_identical_bytes(
    store: MinioObjectStore, bucket: str, tmp_path: Path
):
    model = tmp_path / "nulog_model.pt"
    model.write_bytes(os.urandom(6 * MiB))
    await store.put_file(bucket, "job-1/nulog_model.pt", model)
    await store.put_bytes(bucket, "job-1/vocab.txt", b"<PAD>\n<CLS>\nfoo\n")

    # What the controller does on success: the per-job files, then the names inference reads.
    await store.copy(bucket, "job-1/nulog_model.pt", bucket, "nulog_model_latest.pt")
    await store.copy(bucket, "job-1/vocab.txt", bucket, "vocab.txt")

    assert await store.get_bytes(bucket, "nulog_model_latest.pt") == model.read_bytes()
    assert await store.get_bytes(bucket, "vocab.txt") == b"<PAD>\n<CLS>\nfoo\n"
    assert await store.list(bucket) == [
        "job-1/nulog_model.pt",
        "job-1/vocab.txt",
        "nulog_model_latest.pt",
        "vocab.txt",
    ]


async def test_copy_across_buckets_creates_the_destination_bucket(store: MinioObjectStore, bucket: str):
    await store.put_bytes(bucket, "job/model.pt", b"weights")

    await store.copy(bucket, "job/model.pt", f"{bucket}-backup", "x/model.pt")

    assert await store.get_bytes(f"{bucket}-backup", "x/model.pt") == b"weights"


async def test_copy_of_a_missing_object_raises_key_error(store: MinioObjectStore, bucket: str):
    await store.put_bytes(bucket, "present", b"x")

    with pytest.raises(KeyError, match=f"{bucket}/missing"):
        await store.copy(bucket, "missing", bucket, "dst")
    assert await store.exists(bucket, "dst") is False


async def test_a_bucket_removed_behind_the_stores_back_is_created_again(
    store: MinioObjectStore, raw: Minio, bucket: str
):
    await store.put_bytes(bucket, "k", b"one")
    raw.remove_object(bucket, "k")
    raw.remove_bucket(bucket)

    await store.put_bytes(bucket, "k", b"two")

    assert await store.get_bytes(bucket, "k") == b"two"


def test_uri_is_an_s3_uri(store: MinioObjectStore):
    assert (
        store.uri("opni-nulog-models", "job-1/nulog_model.pt")
        == "s3://opni-nulog-models/job-1/nulog_model.pt"
    )
    assert store.uri("opni-nulog-models", "job-1") == "s3://opni-nulog-models/job-1"
    assert store.uri("training-logs", "") == "s3://training-logs"


async def test_ping_is_true_against_a_live_endpoint(store: MinioObjectStore):
    assert await store.ping() is True


def test_repr_and_attributes_hold_no_credentials(store: MinioObjectStore):
    assert SECRET_KEY not in repr(store)
    assert ACCESS_KEY not in repr(store)
    assert SECRET_KEY not in str(vars(store).get("endpoint"))


@pytest.mark.parametrize(
    ("endpoint", "secure", "host"),
    [("http://minio:9000", False, "minio:9000"), ("https://s3.example.com", True, "s3.example.com")],
)
def test_the_endpoint_scheme_decides_tls(endpoint: str, secure: bool, host: str):
    assert parse_endpoint(endpoint) == (host, secure)


@pytest.mark.parametrize("endpoint", ["minio:9000", "ftp://minio", "http://minio:9000/bucket", "http://"])
def test_a_malformed_endpoint_is_rejected(endpoint: str):
    with pytest.raises(ValueError, match="endpoint"):
        MinioObjectStore(endpoint, access_key="a", secret_key="b")


def test_an_endpoint_with_credentials_is_rejected_without_echoing_them():
    with pytest.raises(ValueError) as info:
        MinioObjectStore("http://user:hunter2@minio:9000", access_key="a", secret_key="b")
    assert "hunter2" not in str(info.value)


def test_a_part_size_below_s3s_minimum_is_rejected():
    with pytest.raises(ValueError, match="part_size"):
        MinioObjectStore("http://minio:9000", access_key="a", secret_key="b", part_size=1 * MiB)


async def test_an_unreachable_endpoint_raises_storage_unavailable_without_the_secret():
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = MinioObjectStore(endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, retries=1, timeout=5)

    with pytest.raises(StorageUnavailable) as info:
        await store.put_bytes("training-logs", "job/manifest.json", b"{}")

    message = str(info.value)
    assert endpoint in message and "training-logs/job/manifest.json" in message
    assert SECRET_KEY not in message and ACCESS_KEY not in message
    assert isinstance(info.value, TemporaryError)
    assert await store.ping() is False


class _BusyHandler(BaseHTTPRequestHandler):
    """Answers every request as an overloaded S3 server does."""

    def _answer(self) -> None:
        body = b'<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>'
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


async def test_a_server_answering_503_raises_storage_unavailable():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BusyHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        store = MinioObjectStore(
            endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1", retries=0
        )
        with pytest.raises(StorageUnavailable, match="download opni-nulog-models/vocab.txt") as info:
            await store.get_bytes("opni-nulog-models", "vocab.txt")
        assert endpoint in str(info.value) and SECRET_KEY not in str(info.value)
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def moto_checks_signatures(s3_url: str) -> Iterator[None]:
    """Make moto check signatures (it accepts any by default); put it back afterwards for the other tests."""

    def set_count(value: bytes) -> None:
        request = urllib.request.Request(
            f"{s3_url}/moto-api/reset-auth", data=value, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    set_count(b"0")  # requests allowed before checking starts
    try:
        yield
    finally:
        set_count(b"inf")


async def test_unknown_credentials_raise_access_denied_without_the_secret(s3_url: str, bucket: str):
    store = MinioObjectStore(
        s3_url, access_key="AKIAUNKNOWNKEY000000", secret_key=SECRET_KEY, region="us-east-1"
    )

    with moto_checks_signatures(s3_url), pytest.raises(StorageAccessDenied) as info:
        await store.put_bytes(bucket, "k", b"x")
    with moto_checks_signatures(s3_url):
        assert await store.ping() is False

    message = str(info.value)
    # The first request is the bucket check, a HEAD: S3 sends no body, so no error code beyond AccessDenied.
    assert "was refused" in message and "access key" in message and s3_url in message
    assert SECRET_KEY not in message and "AKIAUNKNOWNKEY000000" not in message
    assert isinstance(info.value, PermanentError)


async def test_a_wrong_secret_key_raises_access_denied_without_the_secret(s3_url: str, bucket: str):
    iam = boto3.client(
        "iam", endpoint_url=s3_url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    user = f"trainer-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
    wrong_secret = "wrong-" + SECRET_KEY
    store = MinioObjectStore(s3_url, access_key=key, secret_key=wrong_secret, region="us-east-1")

    with moto_checks_signatures(s3_url), pytest.raises(StorageAccessDenied) as info:
        await store.get_bytes(bucket, "k")

    message = str(info.value)
    assert "SignatureDoesNotMatch" in message
    assert wrong_secret not in message and key not in message


def _write_logs(directory: Path, start_ns: int) -> list[str]:
    lines = [f"user u{i % 3} logged in from 10.0.0.{i}" for i in range(10)]
    docs = [
        {"timestamp": start_ns + i * 20 * 10**9, "log": line, "cluster_id": "c1", "namespace_name": "ns"}
        for i, line in enumerate(lines)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "logs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return lines


async def test_export_writes_the_training_data_and_manifest_in_the_documented_layout(
    store: MinioObjectStore, raw: Minio, tmp_path: Path
):
    start = 1_617_037_200 * 10**9  # a whole minute
    _write_logs(tmp_path / "logs", start)
    query = LogQuery(intervals=(Interval(start_ns=start, end_ns=start + 3600 * 10**9),))
    bucket = f"training-logs-{uuid.uuid4().hex[:8]}"

    result = await export_training_data(
        query,
        job_id="job-7",
        source=FilesLogSource(tmp_path / "logs"),
        store=store,
        bucket=bucket,
        window_seconds=60,
    )

    assert await store.list(bucket) == ["job-7/manifest.json", "job-7/windows.jsonl.gz"]
    data = await store.get_bytes(bucket, "job-7/windows.jsonl.gz")
    windows = [json.loads(line) for line in gzip.decompress(data).splitlines()]
    assert [w["count"] for w in windows] == [3, 3, 3, 1]  # 10 lines 20 s apart, in 60 s windows
    assert all(w["end_ts"] - w["start_ts"] == 60 * 10**9 for w in windows)
    assert sum(len(w["logs"]) for w in windows) == 10
    manifest = json.loads(await store.get_bytes(bucket, "job-7/manifest.json"))
    assert manifest["job_id"] == "job-7"
    assert manifest["count"] == 10 and manifest["windows"] == 4
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() == result.sha256
    assert manifest["data_file"] == "windows.jsonl.gz"
    assert manifest["intervals"] == [{"start_ns": start, "end_ns": start + 3600 * 10**9}]
    assert (result.bucket, result.data_key, result.manifest_key) == (
        bucket,
        "job-7/windows.jsonl.gz",
        "job-7/manifest.json",
    )
    assert store.uri(bucket, result.data_key) == f"s3://{bucket}/job-7/windows.jsonl.gz"
    assert raw.bucket_exists(bucket)


async def test_an_invalid_bucket_name_raises_invalid_request(store: MinioObjectStore):
    with pytest.raises(InvalidRequest, match="Bad_Bucket"):
        await store.put_bytes("Bad_Bucket", "k", b"x")
