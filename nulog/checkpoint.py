"""Saving and loading a NuLog model: one file holds weights, the three configs, the vocabulary and, to resume
training, the step and the optimizer's state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nulog.config import ModelConfig, ParseConfig, TrainConfig
from nulog.encoder import LineEncoder
from nulog.model import NuLog
from nulog.tokenizer import Vocab

FORMAT = "nulog-checkpoint/2"
MODEL_FILES = ("nulog_model_latest.pt", "nulog_model.pt")


@dataclass
class Checkpoint:
    """A model with its encoder and options, and where its training stands."""

    model: NuLog
    encoder: LineEncoder
    parse: ParseConfig
    train: TrainConfig | None = None
    step: int = 0
    optimizer: dict[str, Any] | None = None  # the optimizer's state_dict, to resume training

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def save_checkpoint(path: str | Path, ckpt: Checkpoint, *, with_optimizer: bool = True) -> None:
    """Write everything needed to rebuild the model and resume its training; tensors are saved from CPU."""
    state = {k: v.detach().cpu() for k, v in ckpt.model.state_dict().items()}
    blob = {
        "format": FORMAT,
        "model_config": ckpt.model.config.to_dict(),
        "parse": ckpt.parse.to_dict(),
        "train": ckpt.train.to_dict() if ckpt.train is not None else None,
        "filters": ckpt.encoder.filters,
        "vocab": ckpt.encoder.vocab.itos,
        "model": state,
        "step": ckpt.step,
        "optimizer": ckpt.optimizer if with_optimizer else None,
    }
    torch.save(blob, path)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the one a model directory holds (`nulog_model_latest.pt` first)."""
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
    blob = torch.load(find_checkpoint(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a NuLog checkpoint ({FORMAT})")
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
    )


def write_vocab(path: str | Path, vocab: Vocab) -> None:
    """One token per line; tokens holding a newline are escaped as `\\n`."""
    Path(path).write_text("".join(t.replace("\n", "\\n") + "\n" for t in vocab.itos), encoding="utf-8")
