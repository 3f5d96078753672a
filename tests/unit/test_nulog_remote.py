"""The training job's s3:// transfers, against moto's threaded S3 server, configured only by environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import urllib3
from minio import Minio

from nulog import remote

MiB = 1024 * 1024
SECRET_KEY = "job-secret-key-that-must-not-leak"


@pytest.fixture
def env(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MINIO_SERVER_URL", s3_url)
    monkeypatch.setenv("MINIO_ACCESS_KEY", "job-access-key")
    monkeypatch.setenv("MINIO_SECRET_KEY", SECRET_KEY)
    monkeypatch.delenv("MINIO_VERIFY_TLS", raising=False)
    return s3_url


@pytest.fixture
def raw(s3_url: str) -> Minio:
    return Minio(urlsplit(s3_url).netloc, access_key="a", secret_key="b", secure=False)


@pytest.fixture
def bucket() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("s3://b/k", True), ("s3://b", True), ("/data/windows.jsonl.gz", False), ("windows.jsonl.gz", False)],
)
def test_is_remote_is_true_only_for_s3_uris(uri: str, expected: bool):
    assert remote.is_remote(uri) is expected


def test_split_uri_gives_bucket_and_key():
    assert remote.split_uri("s3://training-logs/job-1/windows.jsonl.gz") == (
        "training-logs",
        "job-1/windows.jsonl.gz",
    )
    assert remote.split_uri("s3://opni-nulog-models") == ("opni-nulog-models", "")
    with pytest.raises(ValueError, match="no bucket"):
        remote.split_uri("s3:///key")


def test_upload_dir_then_download_round_trips_every_file(env: str, raw: Minio, bucket: str, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "nulog_model.pt").write_bytes(os.urandom(11 * MiB))
    (out / "vocab.txt").write_text("<PAD>\n<CLS>\nfoo\n")
    (out / "metrics.json").write_text('{"loss": 0.5}')

    keys = remote.upload_dir(out, f"s3://{bucket}/job-1", part_size=5 * MiB)

    assert keys == ["job-1/metrics.json", "job-1/nulog_model.pt", "job-1/vocab.txt"]
    assert sorted(o.object_name for o in raw.list_objects(bucket, recursive=True)) == keys
    assert raw.stat_object(bucket, "job-1/nulog_model.pt").etag.endswith("-3")  # multipart, 3 parts
    for name in ("nulog_model.pt", "vocab.txt", "metrics.json"):
        got = remote.download(f"s3://{bucket}/job-1/{name}", tmp_path / "back")
        assert got == tmp_path / "back" / name
        assert got.read_bytes() == (out / name).read_bytes()


def test_upload_dir_to_a_bucket_root_and_a_trailing_slash(env: str, raw: Minio, bucket: str, tmp_path: Path):
    (tmp_path / "a.txt").write_text("a")

    assert remote.upload_dir(tmp_path, f"s3://{bucket}") == ["a.txt"]
    assert remote.upload_dir(tmp_path, f"s3://{bucket}/p/") == ["p/a.txt"]
    assert raw.get_object(bucket, "p/a.txt").read() == b"a"


def test_download_of_a_missing_object_raises_file_not_found_naming_it(
    env: str, raw: Minio, bucket: str, tmp_path: Path
):
    raw.make_bucket(bucket)

    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/job-1/windows.jsonl.gz"):
        remote.download(f"s3://{bucket}/job-1/windows.jsonl.gz", tmp_path)
    with pytest.raises(FileNotFoundError):
        remote.download(f"s3://{bucket}-missing/job-1/windows.jsonl.gz", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_of_a_prefix_is_rejected(env: str, tmp_path: Path):
    with pytest.raises(ValueError, match="prefix"):
        remote.download("s3://training-logs/job-1/", tmp_path)


@pytest.mark.parametrize("missing", ["MINIO_SERVER_URL", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"])
def test_a_missing_variable_gives_an_error_naming_it(
    env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str
):
    monkeypatch.delenv(missing)

    with pytest.raises(remote.RemoteConfigError, match=missing) as info:
        remote.download("s3://training-logs/job-1/windows.jsonl.gz", tmp_path)
    assert SECRET_KEY not in str(info.value)
    with pytest.raises(remote.RemoteConfigError, match=missing):
        remote.upload_dir(tmp_path, "s3://opni-nulog-models/job-1")


def test_every_missing_variable_is_named_at_once():
    with pytest.raises(remote.RemoteConfigError) as info:
        remote.client_from_env({})
    assert all(
        name in str(info.value) for name in ("MINIO_SERVER_URL", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")
    )


def _env(**extra: str) -> dict[str, str]:
    return {
        "MINIO_SERVER_URL": "https://minio:9000",
        "MINIO_ACCESS_KEY": "a",
        "MINIO_SECRET_KEY": "s",
        **extra,
    }


def test_tls_is_verified_unless_turned_off_by_name():
    # The client keeps its settings in its http pool: CERT_REQUIRED unless verification is off.
    assert remote.client_from_env(_env())._http.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"
    assert (
        remote.client_from_env(_env(MINIO_VERIFY_TLS="true"))._http.connection_pool_kw["cert_reqs"]
        == "CERT_REQUIRED"
    )
    assert (
        remote.client_from_env(_env(MINIO_VERIFY_TLS="false"))._http.connection_pool_kw["cert_reqs"]
        == "CERT_NONE"
    )
    with pytest.raises(remote.RemoteConfigError, match="MINIO_VERIFY_TLS"):
        remote.client_from_env(_env(MINIO_VERIFY_TLS="maybe"))


@pytest.mark.parametrize("url", ["minio:9000", "http://minio:9000/bucket", "http://user:pw@minio:9000"])
def test_a_malformed_endpoint_is_rejected_naming_the_variable(url: str):
    with pytest.raises(remote.RemoteConfigError, match="MINIO_SERVER_URL") as info:
        remote.client_from_env(_env(MINIO_SERVER_URL=url))
    assert "pw" not in str(info.value)


def test_an_unreachable_endpoint_raises_remote_error_without_the_secret(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # No retries: the client's default pool retries 5 times with back-off.
    http = urllib3.PoolManager(retries=0)
    client = Minio(f"127.0.0.1:{port}", access_key="a", secret_key=SECRET_KEY, secure=False, http_client=http)

    with pytest.raises(remote.RemoteError, match="cannot download") as info:
        remote.download("s3://training-logs/job-1/windows.jsonl.gz", tmp_path, client=client)
    assert SECRET_KEY not in str(info.value)


def test_the_module_imports_without_the_controller():
    probe = "import sys; sys.modules['training_controller'] = None; import nulog.remote; print('ok')"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
