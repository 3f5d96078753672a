from __future__ import annotations

import numpy as np
import pytest
import torch

from nulog.config import NuLogConfig
from nulog.data import encode
from nulog.model import NuLog
from nulog.tokenizer import Tokenizer, Vocab
from nulog.train import learning_rate, make_batches, sample_weights, train

from .conftest import small_config


def _batch(lines: list[str], config: NuLogConfig) -> tuple[NuLog, torch.Tensor, torch.Tensor]:
    tok = Tokenizer(config.filters)
    token_lists = [tok.tokenize(line) for line in lines]
    vocab = Vocab.build(token_lists)
    config.vocab_size = len(vocab)
    enc = encode(token_lists, vocab, max_len=config.max_len)
    return NuLog(config), enc.ids, enc.targets


@pytest.mark.parametrize("readout", ["mask", "cls"])
def test_single_pass_predictions_equal_masked_copies_at_one_layer(corpus: list[str], readout: str) -> None:
    torch.manual_seed(0)
    model, ids, select = _batch(corpus[:24], small_config(readout=readout, dropout=0.1))
    model.eval()
    with torch.no_grad():
        fast, _ = model(ids, select=select)
        slow, _ = model(ids, select=select, reference=True)
    assert fast.shape == slow.shape == (int(select.sum()), model.config.vocab_size)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_dense_logits_agree_with_selected_rows(corpus: list[str]) -> None:
    torch.manual_seed(0)
    model, ids, select = _batch(corpus[:8], small_config())
    model.eval()
    targets = torch.where(select, ids, -1)
    with torch.no_grad():
        dense, dense_loss = model(ids, targets)
        rows, row_loss = model(ids, targets, select=select)
    torch.testing.assert_close(dense[select], rows)
    torch.testing.assert_close(dense_loss, row_loss)


def test_deeper_model_takes_the_masked_copies_path(corpus: list[str]) -> None:
    torch.manual_seed(0)
    model, ids, select = _batch(corpus[:8], small_config(n_layers=2))
    logits, loss = model(ids, torch.where(select, ids, -1))
    assert logits.shape == (int(select.sum()), model.config.vocab_size)
    loss.backward()
    assert model.blocks[1].attn.qkv.weight.grad is not None


def test_model_overfits_a_tiny_batch(corpus: list[str]) -> None:
    torch.manual_seed(0)
    model, ids, select = _batch(corpus[:8], small_config())
    targets = torch.where(select, ids, -1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        _, loss = model(ids, targets, select=select)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 1.0
    assert loss.item() < 0.05


def test_training_loss_falls_and_every_epoch_reports(corpus: list[str]) -> None:
    seen = []
    result = train(corpus[:200], small_config(epochs=10), device="cpu", on_progress=seen.append)
    epoch_ends = [p for p in seen if p.epoch_end]
    assert [p.epoch for p in epoch_ends] == list(range(1, 11))
    assert epoch_ends[-1].step == result.steps == epoch_ends[-1].steps
    assert result.final_loss < 0.5
    assert result.masked_tokens > 0 and result.tokens_per_s > 0


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    config = NuLogConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    rates = [learning_rate(s, 200, config) for s in range(200)]
    assert rates[0] < rates[9] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-4, rel=0.05)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))


def test_sampling_lifts_rare_line_shapes() -> None:
    token_lists = [["a", " ", "1"], ["a", " ", "2"], ["a", " ", "3"], ["rare", " ", "event"]]
    w = sample_weights(token_lists, [1, 1, 1, 1])
    assert w.sum() == pytest.approx(1.0)
    # three lines share one shape (ids differ only), so each weighs 1/sqrt(3) of the rare line
    assert w[3] == pytest.approx(w[0] * 3**0.5)


def test_training_on_drawn_samples_takes_the_asked_number_of_lines(corpus: list[str]) -> None:
    result = train(corpus, small_config(num_samples=64, epochs=2, batch_size=16), device="cpu")
    assert result.steps == 2 * 4


def test_outlier_long_lines_are_batched_apart_and_small() -> None:
    lengths = np.array([10] * 100 + [500] * 6)
    batches = make_batches(np.arange(106), lengths, 32, np.random.default_rng(0), n_heads=8)
    assert sorted(np.concatenate(batches).tolist()) == list(range(106))
    for b in batches:
        assert len(set(lengths[b].tolist())) == 1  # no 10-token line padded to 500
        assert len(b) * 8 * int(lengths[b].max()) ** 2 <= (1 << 25) or len(b) == 1
