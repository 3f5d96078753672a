"""s3:// URIs for the training job: fetch its data from the object store and send its model files back.

In a Kubernetes deployment the controller hands the job `s3://training-logs/<job>/windows.jsonl.gz` and
`s3://opni-nulog-models/<job>`; with the local store it hands plain paths, and nothing here is used. The
training image has neither the controller nor its settings, so this module imports only `minio` (with
urllib3, its transport, for connection errors) and the standard library, and reads the endpoint,
credentials and TLS settings from the variables the controller hands every job (`nulog.objectstore`, the
one MinIO client configuration of both): `MINIO_SERVER_URL`, `MINIO_ACCESS_KEY`, `MINIO_SECRET_KEY`,
`MINIO_VERIFY_TLS` (certificates are verified unless it turns that off by name) and `MINIO_CA_FILE`. Uploads are multipart, part by part,
so a large model never sits in memory whole.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from nulog.objectstore import MinioConfig, MinioConfigError

SCHEME = "s3://"
DEFAULT_PART_SIZE = 16 * 1024 * 1024


class RemoteError(Exception):
    """The object store could not be reached or refused the transfer."""


class RemoteConfigError(RemoteError):
    """The environment does not say how to reach the object store; the message names the variables."""


def is_remote(uri: str) -> bool:
    """Whether `uri` names an object store location (s3://...) rather than a local path."""
    return uri.startswith(SCHEME)


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` → ("bucket", "some/key"); the key may be empty (a whole bucket)."""
    if not is_remote(uri):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, key


def client_from_env(env: Mapping[str, str] | None = None) -> Minio:
    """A minio client for the endpoint, keys and TLS settings in the environment (`os.environ` by default)."""
    try:
        return MinioConfig.from_env(os.environ if env is None else env).client()
    except MinioConfigError as e:
        raise RemoteConfigError(str(e)) from None


def download(uri: str, dest_dir: Path | str, *, client: Minio | None = None) -> Path:
    """Fetch the object `s3://bucket/key` to `dest_dir/<last part of key>` and return that path.

    Raises FileNotFoundError when the object does not exist, RemoteError when the store fails.
    """
    bucket, key = split_uri(uri)
    if not key or key.endswith("/"):
        raise ValueError(f"{uri!r} names a prefix, not an object")
    dest = Path(dest_dir) / Path(key).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    client = client or client_from_env()
    try:
        # fget_object writes to a temporary name and renames it into place when complete.
        client.fget_object(bucket, key, str(dest))
    except S3Error as e:
        if e.code in ("NoSuchKey", "NoSuchBucket"):
            raise FileNotFoundError(f"{uri} does not exist") from None
        raise RemoteError(f"cannot download {uri}: {e.code}: {e.message}") from e
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
        raise RemoteError(f"cannot download {uri}: {type(e).__name__}: {e}") from e
    return dest


def upload_file(path: Path | str, uri: str, *, client: Minio | None = None, part_size: int = DEFAULT_PART_SIZE) -> None:
    """Upload one file to the object `s3://bucket/key` (the bucket is created if it is missing); a reader
    of the key sees the old object or the new one, never part of it."""
    bucket, key = split_uri(uri)
    if not key or key.endswith("/"):
        raise ValueError(f"{uri!r} names a prefix, not an object")
    client = client or client_from_env()
    try:
        _ensure_bucket(client, bucket)
        client.fput_object(bucket, key, str(path), part_size=part_size)
    except S3Error as e:
        raise RemoteError(f"cannot upload {path} to {uri}: {e.code}: {e.message}") from e
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
        raise RemoteError(f"cannot upload {path} to {uri}: {type(e).__name__}: {e}") from e


def _ensure_bucket(client: Minio, bucket: str) -> None:
    if not client.bucket_exists(bucket):
        try:
            client.make_bucket(bucket)
        except S3Error as e:
            if e.code != "BucketAlreadyOwnedByYou":
                raise


def upload_dir(
    local_dir: Path | str, uri: str, *, client: Minio | None = None, part_size: int = DEFAULT_PART_SIZE
) -> list[str]:
    """Upload every file under `local_dir` to `s3://bucket/prefix/<relative path>`; returns the keys written.

    The bucket is created if it is missing. Files go up in sorted order, as multipart uploads of `part_size`.
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    bucket, prefix = split_uri(uri)
    prefix = prefix.strip("/")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    client = client or client_from_env()
    keys: list[str] = []
    try:
        _ensure_bucket(client, bucket)
        for path in files:
            relative = path.relative_to(root).as_posix()
            key = f"{prefix}/{relative}" if prefix else relative
            client.fput_object(bucket, key, str(path), part_size=part_size)
            keys.append(key)
    except S3Error as e:
        raise RemoteError(f"cannot upload {root} to {uri}: {e.code}: {e.message}") from e
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as e:
        raise RemoteError(f"cannot upload {root} to {uri}: {type(e).__name__}: {e}") from e
    return keys
