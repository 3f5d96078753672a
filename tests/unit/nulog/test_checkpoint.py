from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nulog.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint, write_vocab
from nulog.predict import Predictor
from nulog.train import TrainResult, train

from .conftest import SMALL_MODEL, small_train


def test_reloaded_checkpoint_gives_identical_predictions(trained: TrainResult, corpus: list[str], tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "nulog_model.pt", trained.checkpoint)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == trained.steps
    assert ckpt.config == trained.model.config and ckpt.parse == trained.checkpoint.parse
    assert ckpt.encoder.vocab.itos == trained.encoder.vocab.itos
    ids, select, _ = trained.encoder.pad([trained.encoder.key(line) for line in corpus[:20]], ckpt.config.max_len)
    ids, select = torch.from_numpy(ids), torch.from_numpy(select)
    with torch.inference_mode():
        before = trained.model.masked_logits(ids, select)
        after = ckpt.model.masked_logits(ids, select)
    assert torch.equal(before, after)
    again = Predictor(ckpt.model, ckpt.encoder, ckpt.parse).predict(corpus)
    assert again == Predictor(trained.model, trained.encoder, trained.checkpoint.parse).predict(corpus)


def test_training_resumed_from_a_checkpoint_ends_where_an_unbroken_run_ends(corpus: list[str], tmp_path: Path) -> None:
    config = small_train(epochs=2, min_steps=12)
    whole = train(corpus, config, model_args=SMALL_MODEL, device="cpu")
    first = train(corpus, config, model_args=SMALL_MODEL, device="cpu", stop_after=5)
    assert first.steps == 5
    save_checkpoint(tmp_path / "nulog_model.pt", first.checkpoint)
    resumed = train(corpus, config, resume=load_checkpoint(tmp_path), device="cpu")
    assert resumed.steps == whole.steps == 12
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)


def test_directory_prefers_the_latest_model(trained: TrainResult, tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "nulog_model.pt", trained.checkpoint)
    trained.checkpoint.step, step = 2, trained.checkpoint.step
    try:
        save_checkpoint(tmp_path / "nulog_model_latest.pt", trained.checkpoint)
    finally:
        trained.checkpoint.step = step
    assert find_checkpoint(tmp_path).name == "nulog_model_latest.pt"
    assert load_checkpoint(tmp_path).step == 2


def test_missing_model_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        find_checkpoint(tmp_path)


def test_vocab_file_has_one_token_per_line(trained: TrainResult, tmp_path: Path) -> None:
    write_vocab(tmp_path / "vocab.txt", trained.encoder.vocab)
    assert (tmp_path / "vocab.txt").read_text().splitlines() == trained.encoder.vocab.itos
