"""The `local` object store: one directory per bucket under a root directory.

The embedded default. Writes go to a temporary name and are renamed into place, so a reader never sees half
an object. File work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from training_controller.core.errors import InvalidRequest, StorageUnavailable
from training_controller.core.ports import ObjectStore


class LocalObjectStore(ObjectStore):
    """Objects as files under `root/<bucket>/<key>`."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, bucket: str, key: str = "") -> Path:
        """The file that holds an object (or the directory of a prefix)."""
        root = self.root.resolve()
        bucket_dir = (root / bucket).resolve()
        target = (bucket_dir / key).resolve()
        if bucket_dir.parent != root or not target.is_relative_to(bucket_dir):
            raise InvalidRequest(f"object name {bucket}/{key} leaves its bucket")
        return target

    def _atomic_write(self, target: Path, write) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, target)
        except OSError as e:
            raise StorageUnavailable(f"cannot write {target}: {e.strerror}") from e

    async def put_file(self, bucket: str, key: str, path: Path) -> None:
        def copy(f) -> None:
            with path.open("rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        await asyncio.to_thread(self._atomic_write, self.path(bucket, key), copy)

    async def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._atomic_write, self.path(bucket, key), lambda f: f.write(data))

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        target = self.path(bucket, key)
        try:
            return await asyncio.to_thread(target.read_bytes)
        except FileNotFoundError:
            raise KeyError(f"{bucket}/{key}") from None
        except OSError as e:
            raise StorageUnavailable(f"cannot read {target}: {e.strerror}") from e

    async def exists(self, bucket: str, key: str) -> bool:
        return await asyncio.to_thread(self.path(bucket, key).is_file)

    async def list(self, bucket: str, prefix: str = "") -> list[str]:
        base = self.path(bucket)

        def walk() -> list[str]:
            if not base.is_dir():
                return []
            keys = (p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
            return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith(".partial-"))

        return await asyncio.to_thread(walk)

    async def copy(self, bucket: str, key: str, dst_bucket: str, dst_key: str) -> None:
        source = self.path(bucket, key)

        def copy(f) -> None:
            with source.open("rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        if not await self.exists(bucket, key):
            raise KeyError(f"{bucket}/{key}")
        await asyncio.to_thread(self._atomic_write, self.path(dst_bucket, dst_key), copy)

    def uri(self, bucket: str, key: str) -> str:
        return str(self.path(bucket, key))

    async def ping(self) -> bool:
        return await asyncio.to_thread(lambda: self.root.is_dir() and os.access(self.root, os.W_OK))
