"""Where the inference worker (`nulog.serve`) finds NATS and its model: `ServeConfig`, read from the
controller's own variables, and `ModelSource`, which fetches the model file (and the vocab.txt a model in
Opni's files needs) from the local store or MinIO. The worker's NATS loop and batching are the other module.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from nulog.objectstore import MinioConfig
from nulog.protocol import LATEST_MODEL_FILE, VOCAB_FILE


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Where the worker finds NATS and the model, and how it batches."""

    nats_url: str
    store: Literal["local", "minio"] = "local"
    local_dir: Path | None = None
    minio: MinioConfig = field(default_factory=MinioConfig)
    bucket: str = "opni-nulog-models"
    model_file: str = LATEST_MODEL_FILE
    lazy: bool = False
    batch_lines: int = 4096  # lines of several requests run through the model together
    batch_wait_s: float = 0.005  # how long the first request of a batch waits for others
    cache_size: int = 50_000  # masked lines whose results are kept, per model
    device: str = "cpu"
    threads: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> ServeConfig:
        """The controller's own variable names: NATS_SERVER_URL, OBJECT_STORE, LOCAL_STORE_DIR, S3_BUCKET, MINIO_*."""
        local = env.get("LOCAL_STORE_DIR")
        values: dict[str, Any] = {
            "nats_url": env.get("NATS_SERVER_URL", "nats://127.0.0.1:4222"),
            "store": env.get("OBJECT_STORE", "local"),
            "local_dir": Path(local) if local else None,
            "minio": MinioConfig.from_env(env),
            "bucket": env.get("S3_BUCKET", "opni-nulog-models"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        if config.store not in ("local", "minio"):
            raise ValueError(f"OBJECT_STORE must be local or minio, not {config.store!r}")
        if config.store == "local" and config.local_dir is None:
            raise ValueError("LOCAL_STORE_DIR (or --local-store-dir) is required with OBJECT_STORE=local")
        if config.store == "minio" and config.minio.missing():
            raise ValueError(f"{', '.join(config.minio.missing())} required with OBJECT_STORE=minio")
        return config


class ModelSource:
    """Fetches a model file from the object store to a local path (blocking; run in a thread)."""

    def __init__(self, config: ServeConfig) -> None:
        self._config = config
        self._client = None
        self._scratch = Path(tempfile.mkdtemp(prefix="nulog-serve-"))

    def fetch(self, bucket: str, key: str) -> Path:
        """The model file; raises FileNotFoundError when the store holds none under that name."""
        if self._config.store == "local":
            assert self._config.local_dir is not None
            path = self._config.local_dir / bucket / key
            if not path.is_file():
                raise FileNotFoundError(f"no model at {path}")
            return path
        from nulog import remote

        if self._client is None:
            self._client = self._config.minio.client()
        dest = self._scratch / hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()[:16]
        model = remote.download(f"s3://{bucket}/{key}", dest, client=self._client)
        # A model in Opni's files needs the vocab.txt beside it (this project's checkpoints carry their own).
        (dest / VOCAB_FILE).unlink(missing_ok=True)  # never one left from an earlier model
        try:
            remote.download(f"s3://{bucket}/{PurePosixPath(key).with_name(VOCAB_FILE)}", dest, client=self._client)
        except FileNotFoundError:
            pass
        return model
