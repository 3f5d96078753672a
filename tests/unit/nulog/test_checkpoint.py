from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nulog.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint, write_vocab
from nulog.data import encode
from nulog.parse import templates
from nulog.tokenizer import Tokenizer
from nulog.train import TrainResult


def test_reloaded_checkpoint_gives_identical_predictions(trained: TrainResult, corpus: list[str], tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "nulog_model.pt", trained.model, trained.vocab, step=trained.steps)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == trained.steps
    assert ckpt.config == trained.config
    assert ckpt.vocab.itos == trained.vocab.itos
    tok = Tokenizer(trained.config.filters)
    enc = encode([tok.tokenize(line) for line in corpus[:20]], trained.vocab, max_len=trained.config.max_len)
    with torch.inference_mode():
        before, _ = trained.model(enc.ids, select=enc.targets)
        after, _ = ckpt.model(enc.ids, select=enc.targets)
    assert torch.equal(before, after)
    assert templates(ckpt.model, ckpt.vocab, corpus) == templates(trained.model, trained.vocab, corpus)


def test_directory_prefers_the_latest_model(trained: TrainResult, tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "nulog_model.pt", trained.model, trained.vocab, step=1)
    save_checkpoint(tmp_path / "nulog_model_latest.pt", trained.model, trained.vocab, step=2)
    assert find_checkpoint(tmp_path).name == "nulog_model_latest.pt"
    assert load_checkpoint(tmp_path).step == 2


def test_missing_model_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        find_checkpoint(tmp_path)


def test_vocab_file_has_one_token_per_line(trained: TrainResult, tmp_path: Path) -> None:
    write_vocab(tmp_path / "vocab.txt", trained.vocab)
    assert (tmp_path / "vocab.txt").read_text().splitlines() == trained.vocab.itos
