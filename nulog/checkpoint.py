"""Saving and loading a model: one file holds weights, the configs, the vocabulary and, to resume training, the
step, the optimizer's state and the fingerprint of the training it belongs to.

Two architectures share the format: this project's NuLog (`arch` "nulog") and Opni's (`arch` "opni", see
`nulog.opni_model`). A model directory may also hold Opni's own files only (`nulog_model_latest.pt` as Opni's
`save_model` writes it and `vocab.txt`); `load_checkpoint` reads those too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from nulog.config import ModelConfig, OpniConfig, ParseConfig, TrainConfig
from nulog.encoder import LineEncoder
from nulog.model import NuLog
from nulog.opni_encoder import OpniEncoder, OpniVocab
from nulog.opni_model import THRESHOLD as OPNI_THRESHOLD
from nulog.opni_model import K as OPNI_K
from nulog.opni_model import OpniNuLog, is_opni_checkpoint, model_from_opni_state
from nulog.protocol import LATEST_MODEL_FILE, MODEL_FILE, NATIVE_MODEL_FILE, VOCAB_FILE
from nulog.tokenizer import Vocab

FORMAT = "nulog-checkpoint/2"
MODEL_FILES = (NATIVE_MODEL_FILE, LATEST_MODEL_FILE, MODEL_FILE)
Arch = Literal["nulog", "opni"]


@dataclass
class Checkpoint:
    """A model with its encoder and options, and where its training stands."""

    model: NuLog | OpniNuLog
    encoder: LineEncoder | OpniEncoder
    parse: ParseConfig
    train: TrainConfig | None = None
    step: int = 0
    optimizer: dict[str, Any] | None = None  # the optimizer's state_dict, to resume training
    fingerprint: str | None = None  # of the training (data and settings) the step belongs to

    @property
    def config(self) -> ModelConfig | OpniConfig:
        return self.model.config

    @property
    def arch(self) -> Arch:
        return "opni" if isinstance(self.model, OpniNuLog) else "nulog"


def save_checkpoint(path: str | Path, ckpt: Checkpoint, *, with_optimizer: bool = True) -> None:
    """Write everything needed to rebuild the model and resume its training; tensors are saved from CPU."""
    state = {k: v.detach().cpu() for k, v in ckpt.model.state_dict().items()}
    vocab = ckpt.encoder.vocab
    blob = {
        "format": FORMAT,
        "arch": ckpt.arch,
        "model_config": ckpt.model.config.to_dict(),
        "parse": ckpt.parse.to_dict(),
        "train": ckpt.train.to_dict() if ckpt.train is not None else None,
        "filters": ckpt.encoder.filters if isinstance(ckpt.encoder, LineEncoder) else None,
        "vocab": vocab.itos,
        "valid_words": vocab.valid_words if isinstance(vocab, OpniVocab) else None,
        "model": state,
        "step": ckpt.step,
        "optimizer": _to_cpu(ckpt.optimizer) if with_optimizer else None,
        "fingerprint": ckpt.fingerprint,
    }
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # a reader never sees half a file, a crash never leaves one


def _to_cpu(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the one a model directory holds (the native one, then `nulog_model_latest.pt`)."""
    path = Path(path)
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds neither {' nor '.join(MODEL_FILES)}")
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}")
    return path


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model of a checkpoint file or model directory, in eval mode."""
    file = find_checkpoint(path)
    blob = torch.load(file, map_location="cpu", weights_only=True)
    if is_opni_checkpoint(blob):
        return _load_opni_files(file, blob, device)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a NuLog checkpoint ({FORMAT}) nor an Opni model")
    model: NuLog | OpniNuLog
    encoder: LineEncoder | OpniEncoder
    if blob.get("arch", "nulog") == "opni":
        encoder = OpniEncoder(OpniVocab(blob["vocab"], blob["valid_words"]))
        model = OpniNuLog(OpniConfig.from_dict(blob["model_config"]))
    else:
        encoder = LineEncoder.load(blob["filters"], blob["vocab"])
        assert encoder.vocab.itos == blob["vocab"], "checkpoint vocabulary does not start with the special tokens"
        model = NuLog(ModelConfig.from_dict(blob["model_config"]))
    model.load_state_dict(blob["model"])
    model.to(device).eval()
    return Checkpoint(
        model=model,
        encoder=encoder,
        parse=ParseConfig.from_dict(blob["parse"]),
        train=TrainConfig.from_dict(blob["train"]) if blob["train"] is not None else None,
        step=int(blob["step"]),
        optimizer=blob["optimizer"],
        fingerprint=blob.get("fingerprint"),
    )


def _load_opni_files(file: Path, blob: dict, device: str | torch.device) -> Checkpoint:
    """A model in Opni's files (trained here or by Opni): its checkpoint dict and the vocab.txt beside it."""
    vocab_file = file.with_name(VOCAB_FILE)
    if not vocab_file.is_file():
        raise FileNotFoundError(f"{file} is an Opni model, but {vocab_file} is missing")
    model = model_from_opni_state(blob["model_state_dict"])
    model.to(device).eval()
    return Checkpoint(model=model, encoder=OpniEncoder(OpniVocab.read(vocab_file)),
                      parse=ParseConfig(k=OPNI_K, threshold=OPNI_THRESHOLD), step=0)


def write_vocab(path: str | Path, vocab: Vocab | OpniVocab) -> None:
    """This project's vocab.txt: one token per line, tokens holding a newline escaped as `\\n` (Opni's format
    is `OpniVocab.write`)."""
    Path(path).write_text("".join(t.replace("\n", "\\n") + "\n" for t in vocab.itos), encoding="utf-8")
