"""The `minio` object store: buckets on MinIO or any S3 endpoint, through the official `minio` client.

Opni's inference service reads its models from such a bucket, so this is the store of a real deployment.
The client blocks, so every call runs in a worker thread (`asyncio.to_thread`) and the event loop stays
free. Files go up as streamed multipart uploads: the client reads one part at a time (a few parts at once
with its parallel uploads), never the whole file. Copies happen on the server: `copy_object` itself turns a
source larger than S3's 5 GiB single-copy limit into a multipart `compose_object`, so a model of any size
can be published under the latest names without passing through the controller.

The client's exceptions stop here: a connection failure, a timeout or a 5xx becomes `StorageUnavailable`
(retry later); refused credentials or permissions become `StorageAccessDenied` (retrying will not help);
a missing object becomes `KeyError`, as the port says. Messages name the endpoint, the operation and the
object, never the credentials.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from minio.commonconfig import CopySource
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from pydantic import SecretStr

from nulog.objectstore import MinioConfig, parse_endpoint
from training_controller.core.errors import (
    InvalidRequest,
    StorageAccessDenied,
    StorageRejected,
    StorageUnavailable,
)
from training_controller.core.ports import ObjectStore

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's smallest part (but the last)
MAX_PART_SIZE = 5 * 1024 * MiB  # S3's largest part

# S3 error codes that say "this object or bucket is not there".
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NotFound"})
# Codes that say the credentials or the permissions are wrong: a person has to change something.
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "InvalidSecurity",
    }
)
# Codes a healthy server sends when it is overloaded or starting up: worth retrying.
BUSY_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "XMinioServerNotInitialized"}
)


class MinioObjectStore(ObjectStore):
    """Objects in buckets of a MinIO or S3 endpoint."""

    name = "minio"

    def __init__(
        self,
        endpoint: str,
        *,
        access_key: str | SecretStr,
        secret_key: str | SecretStr,
        region: str | None = None,
        verify_tls: bool = True,
        ca_file: Path | str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        timeout: float = 60.0,
        retries: int = 3,
    ) -> None:
        host, secure = parse_endpoint(endpoint)
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between 5 MiB and 5 GiB, not {part_size} bytes")
        self.config = MinioConfig(
            url=endpoint,
            access_key=SecretStr(access_key) if isinstance(access_key, str) else access_key,
            secret_key=SecretStr(secret_key) if isinstance(secret_key, str) else secret_key,
            verify_tls=verify_tls,
            ca_file=Path(ca_file) if ca_file is not None else None,
            region=region,
        )
        if self.config.missing():
            raise ValueError("the MinIO access key and secret key must both be set")
        self.endpoint = f"{'https' if secure else 'http'}://{host}"
        self.part_size = part_size
        # Kept only to scrub them from any text a server might echo back.
        self._secrets = (self.config.access_key.get_secret_value(), self.config.secret_key.get_secret_value())
        self._client = self.config.client(timeout=timeout, retries=retries)
        self._buckets: set[str] = set()
        self._buckets_lock = threading.Lock()
        if secure and not verify_tls:
            log.warning(
                "object store %s: TLS certificates are not verified (verify_tls=False)", self.endpoint
            )

    @classmethod
    def from_config(cls, config: MinioConfig, **options: Any) -> MinioObjectStore:
        """The store of a MinIO configuration (the one the training jobs get as well)."""
        if config.url is None or config.access_key is None or config.secret_key is None:
            raise ValueError(f"the MinIO configuration lacks {', '.join(config.missing())}")
        return cls(
            config.url,
            access_key=config.access_key,
            secret_key=config.secret_key,
            verify_tls=config.verify_tls,
            ca_file=config.ca_file,
            region=config.region,
            **options,
        )

    def __repr__(self) -> str:
        return f"MinioObjectStore({self.endpoint!r})"

    # --- the port -----------------------------------------------------------------------------------------

    async def put_file(self, bucket: str, key: str, path: Path) -> None:
        def upload() -> None:
            try:
                f = path.open("rb")
            except OSError as e:
                raise StorageUnavailable(f"cannot read {path} to upload it: {e.strerror}") from e
            with f:
                size = path.stat().st_size
                # Known length and part size: the client reads the open file part by part (a few parts in
                # flight with its parallel uploads), never the whole of it.
                self._client.put_object(bucket, key, f, size, part_size=self.part_size)

        await self._run("upload", bucket, key, upload, create_bucket=True)
        log.debug("object store %s: uploaded %s to %s/%s", self.endpoint, path, bucket, key)

    async def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        def upload() -> None:
            self._client.put_object(bucket, key, io.BytesIO(data), len(data), part_size=self.part_size)

        await self._run("upload", bucket, key, upload, create_bucket=True)

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        def download() -> bytes:
            response = self._client.get_object(bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        try:
            return await self._run("download", bucket, key, download)
        except _NotFound:
            raise KeyError(f"{bucket}/{key}") from None

    async def exists(self, bucket: str, key: str) -> bool:
        try:
            await self._run("stat", bucket, key, lambda: self._client.stat_object(bucket, key))
        except _NotFound:
            return False
        return True

    async def list(self, bucket: str, prefix: str = "") -> list[str]:
        def walk() -> list[str]:
            objects = self._client.list_objects(bucket, prefix=prefix or None, recursive=True)
            return sorted(o.object_name for o in objects if o.object_name and not o.is_dir)

        try:
            return await self._run("list", bucket, prefix, walk)
        except _NotFound:
            return []

    async def copy(self, bucket: str, key: str, dst_bucket: str, dst_key: str) -> None:
        # copy_object stats the source first and composes it in parts when it exceeds 5 GiB.
        def copy() -> None:
            self._client.copy_object(dst_bucket, dst_key, CopySource(bucket, key))

        try:
            await self._run(f"copy of {bucket}/{key} to", dst_bucket, dst_key, copy, create_bucket=True)
        except _NotFound:
            raise KeyError(f"{bucket}/{key}") from None

    def uri(self, bucket: str, key: str) -> str:
        return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"

    async def ping(self) -> bool:
        """Whether the endpoint answers and accepts the credentials."""

        def probe() -> bool:
            try:
                self._client.list_buckets()
            except S3Error as e:
                # Valid credentials without the right to list buckets still make a working store.
                return e.code == "AccessDenied"
            except (MinioException, urllib3.exceptions.HTTPError, OSError):
                return False
            return True

        return await asyncio.to_thread(probe)

    # --- plumbing -----------------------------------------------------------------------------------------

    def _ensure_bucket(self, bucket: str) -> None:
        """Create the bucket if it is missing; remembers the buckets known to exist (blocking)."""
        if bucket in self._buckets:
            return
        with self._buckets_lock:
            if bucket in self._buckets:
                return
            if not self._client.bucket_exists(bucket):
                try:
                    self._client.make_bucket(bucket)
                    log.info("object store %s: created bucket %s", self.endpoint, bucket)
                except S3Error as e:
                    if e.code != "BucketAlreadyOwnedByYou":  # another writer created it first
                        raise
            self._buckets.add(bucket)

    async def _run(
        self, operation: str, bucket: str, key: str, call: Callable[[], T], *, create_bucket: bool = False
    ) -> T:
        """Run a blocking client call in a thread and translate what it raises.

        A write whose bucket vanished after we cached it (NoSuchBucket) forgets the bucket and tries once more.
        """

        def attempt() -> T:
            if create_bucket:
                self._ensure_bucket(bucket)
            return call()

        for first in (True, False):
            try:
                return await asyncio.to_thread(attempt)
            except S3Error as e:
                if create_bucket and first and e.code == "NoSuchBucket" and bucket in self._buckets:
                    self._buckets.discard(bucket)
                    continue
                raise self._translate(e, operation, bucket, key) from e
            except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                raise self._translate(e, operation, bucket, key) from e
        raise AssertionError("unreachable")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _translate(self, e: Exception, operation: str, bucket: str, key: str) -> Exception:
        """The controller's error for a client exception; never carries the credentials."""
        where = f"object store {self.endpoint}: {operation} {bucket}/{key}".rstrip("/")
        if isinstance(e, StorageUnavailable):
            return e  # raised by our own code in the worker thread (a local file that cannot be read)
        if isinstance(e, S3Error):
            code = e.code or "unknown"
            detail = self._scrub(f"{code}: {e.message}" if e.message else code)
            status = e.response.status if e.response is not None else 0
            if code in NOT_FOUND_CODES:
                return _NotFound(f"{where}: {detail}")
            if code in DENIED_CODES:
                return StorageAccessDenied(
                    f"{where} was refused ({detail}); check the access key, the secret key and the policy"
                )
            if status >= 500 or status == 429 or code in BUSY_CODES:
                return StorageUnavailable(f"{where} failed with HTTP {status} ({detail})")
            return StorageRejected(f"{where} was rejected ({detail})")
        if isinstance(e, ServerError | InvalidResponseError):
            status = e.status_code if isinstance(e, ServerError) else getattr(e, "_code", 0)
            if status == 403:
                return StorageAccessDenied(
                    f"{where} was refused (HTTP 403); check the credentials and the policy"
                )
            if status >= 500 or status == 429 or status == 0:
                return StorageUnavailable(f"{where} failed with HTTP {status}")
            return StorageRejected(f"{where} failed with HTTP {status} and a response that is not S3's")
        if isinstance(e, urllib3.exceptions.MaxRetryError):
            reason = e.reason
            if isinstance(reason, urllib3.exceptions.SSLError):
                return StorageUnavailable(
                    f"{where} failed: TLS verification failed ({self._scrub(str(reason))}); "
                    "give the CA file or turn verification off by name (verify_tls=False)"
                )
            if isinstance(reason, urllib3.exceptions.ResponseError):
                return StorageUnavailable(f"{where} failed: the server kept answering with errors")
            return StorageUnavailable(f"{where} failed: cannot connect ({type(reason).__name__})")
        if isinstance(e, urllib3.exceptions.HTTPError | OSError):
            return StorageUnavailable(f"{where} failed: {type(e).__name__}: {self._scrub(str(e))}")
        if isinstance(e, ValueError):
            # The client checks names before sending: an invalid bucket or object name.
            return InvalidRequest(f"{where}: {self._scrub(str(e))}")
        return StorageUnavailable(f"{where} failed: {type(e).__name__}")


class _NotFound(StorageRejected):
    """The object or bucket is missing: reads turn this into KeyError, `exists` into False."""
