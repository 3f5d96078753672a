"""Saving and loading a NuLog model: one file holds weights, config, vocabulary and step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nulog.config import NuLogConfig
from nulog.model import NuLog
from nulog.tokenizer import Vocab

FORMAT = "nulog-checkpoint/1"
MODEL_FILES = ("nulog_model_latest.pt", "nulog_model.pt")


@dataclass
class Checkpoint:
    """A model rebuilt from a checkpoint file."""

    model: NuLog
    vocab: Vocab
    config: NuLogConfig
    step: int


def save_checkpoint(path: str | Path, model: NuLog, vocab: Vocab, *, step: int) -> None:
    """Write everything needed to rebuild the model; weights are saved from CPU copies."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {"format": FORMAT, "config": model.config.to_dict(), "vocab": vocab.itos, "model": state, "step": step},
        path,
    )


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
    config = NuLogConfig.from_dict(blob["config"])
    vocab = Vocab(blob["vocab"])
    assert vocab.itos == blob["vocab"], "checkpoint vocabulary does not start with the special tokens"
    model = NuLog(config)
    model.load_state_dict(blob["model"])
    model.to(device).eval()
    return Checkpoint(model=model, vocab=vocab, config=config, step=int(blob["step"]))


def write_vocab(path: str | Path, vocab: Vocab) -> None:
    """One token per line; tokens holding a newline are escaped as `\\n`."""
    Path(path).write_text("".join(t.replace("\n", "\\n") + "\n" for t in vocab.itos), encoding="utf-8")
