"""The inference worker's model source on a real S3 endpoint (moto): a model in Opni's files loads, because its
vocab.txt comes down beside it; a model in this project's format needs nothing beside it."""

from __future__ import annotations

from pathlib import Path

import torch

from nulog import remote
from nulog.checkpoint import load_checkpoint
from nulog.config import OpniConfig
from nulog.objectstore import MinioConfig
from nulog.opni_encoder import OpniVocab, words
from nulog.opni_model import OpniNuLog, save_opni_checkpoint
from nulog.serve_source import ModelSource, ServeConfig


def _config(s3_url: str) -> ServeConfig:
    minio = MinioConfig(minio_server_url=s3_url, minio_access_key="testing", minio_secret_key="testing",
                        minio_region="us-east-1")
    return ServeConfig(nats_url="nats://127.0.0.1:1", store="minio", minio=minio, bucket="serve-source")


def test_a_model_in_opnis_files_comes_down_with_its_vocab_and_loads(s3_url: str, tmp_path: Path) -> None:
    config = _config(s3_url)
    client = config.minio.client()
    vocab = OpniVocab.learn([words("disk sda1 full on node a"), words("disk sda2 ok")])
    vocab.write(tmp_path / "vocab.txt")
    torch.manual_seed(0)
    model = OpniNuLog(OpniConfig())
    save_opni_checkpoint(tmp_path / "nulog_model_latest.pt", model, None, epoch=1, loss=0.5)
    for name in ("nulog_model_latest.pt", "vocab.txt"):
        remote.upload_file(tmp_path / name, f"s3://serve-source/{name}", client=client)

    source = ModelSource(config)
    fetched = source.fetch("serve-source", "nulog_model_latest.pt")
    assert (fetched.parent / "vocab.txt").read_bytes() == (tmp_path / "vocab.txt").read_bytes()
    loaded = load_checkpoint(fetched)
    assert loaded.arch == "opni" and loaded.encoder.key("disk sda1 full") == vocab_key(tmp_path, "disk sda1 full")

    # The vocabulary goes with its model: one deleted from the store is not served from an earlier download.
    client.remove_object("serve-source", "vocab.txt")
    again = source.fetch("serve-source", "nulog_model_latest.pt")
    assert not (again.parent / "vocab.txt").exists()


def vocab_key(root: Path, line: str) -> tuple[int, ...]:
    from nulog.opni_encoder import OpniEncoder

    return OpniEncoder(OpniVocab.read(root / "vocab.txt")).key(line)
