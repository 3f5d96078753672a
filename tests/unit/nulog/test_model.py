from __future__ import annotations

import numpy as np
import pytest
import torch

from nulog.config import ModelConfig, TrainConfig
from nulog.encoder import LineEncoder
from nulog.model import NuLog
from nulog.plan import Corpus, Plan, draw_probabilities, forward_parts
from nulog.train import learning_rate

from .conftest import SMALL_MODEL, train_small


def _batch(lines: list[str], **model_args) -> tuple[NuLog, torch.Tensor, torch.Tensor]:
    encoder = LineEncoder.fit(lines, TrainConfig())
    config = ModelConfig(vocab_size=len(encoder.vocab), **{**SMALL_MODEL, **model_args})
    ids, select, _ = encoder.pad([encoder.key(line) for line in lines], config.max_len)
    return NuLog(config), torch.from_numpy(ids), torch.from_numpy(select)


@pytest.mark.parametrize("readout", ["mask", "cls"])
def test_single_pass_predictions_equal_masked_copies_at_one_layer(corpus: list[str], readout: str) -> None:
    torch.manual_seed(0)
    model, ids, select = _batch(corpus[:24], readout=readout, dropout=0.1)
    model.eval()
    with torch.no_grad():
        fast = model.masked_logits(ids, select)
        slow = model.copies_logits(ids, select)
    assert fast.shape == slow.shape == (int(select.sum()), model.config.vocab_size)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_dense_logits_agree_with_selected_rows_and_give_the_mean_loss(corpus: list[str]) -> None:
    torch.manual_seed(0)
    model, ids, select = _batch(corpus[:8])
    model.eval()
    targets = torch.where(select, ids, -1)
    with torch.no_grad():
        dense, loss = model(ids, targets)
        rows = model.masked_logits(ids, select)
    torch.testing.assert_close(dense[select], rows)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(rows, ids[select]))


def test_deeper_model_takes_the_masked_copies_path(corpus: list[str]) -> None:
    torch.manual_seed(0)
    model, ids, select = _batch(corpus[:8], n_layers=2)
    logits, loss = model(ids, torch.where(select, ids, -1))
    assert logits.shape == (*ids.shape, model.config.vocab_size)
    loss.backward()
    assert model.blocks[1].attn.qkv.weight.grad is not None


def test_model_overfits_a_tiny_batch(corpus: list[str]) -> None:
    torch.manual_seed(0)
    model, ids, select = _batch(corpus[:8])
    targets = torch.where(select, ids, -1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        _, loss = model(ids, targets)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 1.0
    assert loss.item() < 0.05


def test_model_config_needs_the_vocabulary_size_and_is_frozen() -> None:
    with pytest.raises(TypeError):
        ModelConfig()  # type: ignore[call-arg]
    config = ModelConfig(vocab_size=10)
    with pytest.raises(AttributeError):
        config.vocab_size = 11  # type: ignore[misc]


def test_training_loss_falls_and_every_epoch_reports(corpus: list[str]) -> None:
    seen = []
    result = train_small(corpus[:200], epochs=10, min_steps=100, on_progress=seen.append)
    epoch_ends = [p for p in seen if p.epoch_end]
    assert [p.epoch for p in epoch_ends] == list(range(1, 11))
    assert epoch_ends[-1].step == result.steps == epoch_ends[-1].steps == 100
    assert result.final_loss < 0.5
    assert result.masked_tokens > 0 and result.tokens_per_s > 0
    assert result.sequences < result.distinct_lines == len(set(corpus[:200]))


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    config = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    rates = [learning_rate(s, 200, config) for s in range(200)]
    assert rates[0] < rates[9] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-4, rel=0.05)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))


def test_a_step_weighs_each_sequence_by_how_often_its_lines_were_drawn() -> None:
    lines = ["a b"] * 90 + ["c d e"] * 10
    encoder = LineEncoder.fit(lines, TrainConfig())
    counts = encoder.count({"a b": 90, "c d e": 10})
    corpus = Corpus.build(list(counts), encoder, max_len=16)
    p = draw_probabilities(np.array(list(counts.values())), "lines")
    assert p.tolist() == pytest.approx([0.9, 0.1])
    plan = Plan.draw(corpus, p, TrainConfig(batch_size=64, epochs=1, min_steps=50))
    assert plan.steps == 50
    drawn = np.zeros(2)
    for s in range(plan.steps):
        rows = plan.rows[plan.starts[s] : plan.starts[s + 1]]
        w = plan.weights[plan.starts[s] : plan.starts[s + 1]]
        assert len(set(rows.tolist())) == len(rows)  # each distinct sequence once per step
        assert (w * corpus.predicted[rows]).sum() == pytest.approx(1.0)  # the loss is a mean over predictions
        drawn[rows] += w / w.sum() * 64  # how many of the step's 64 draws were of each sequence
    assert drawn.sum() == pytest.approx(50 * 64)
    assert drawn[0] / drawn.sum() == pytest.approx(0.9, abs=0.02)
    uniform = draw_probabilities(np.array(list(counts.values())), "sequences")
    assert uniform.tolist() == [0.5, 0.5]


def test_a_step_of_long_lines_is_cut_into_passes_that_fit_the_attention_budget() -> None:
    lengths = np.array([10] * 8 + [900] * 6)
    parts = forward_parts(np.arange(14), lengths, n_heads=8)
    assert sorted(np.concatenate(parts).tolist()) == list(range(14))
    for part in parts:
        assert len(part) * 8 * int(lengths[part].max()) ** 2 <= (1 << 25) or len(part) == 1


def test_our_adamw_takes_the_steps_torch_adamw_takes() -> None:
    from nulog.train import AdamW

    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a = AdamW([{"params": ours[:1], "weight_decay": 0.1}, {"params": ours[1:], "weight_decay": 0.0}],
              lr=1e-2, betas=(0.9, 0.98), eps=1e-9)
    b = torch.optim.AdamW([{"params": theirs[:1], "weight_decay": 0.1}, {"params": theirs[1:], "weight_decay": 0.0}],
                          lr=1e-2, betas=(0.9, 0.98), eps=1e-9)
    for _ in range(5):
        g = [torch.randn_like(p) for p in ours]
        for p, q, x in zip(ours, theirs, g, strict=True):
            p.grad, q.grad = x.clone(), x.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q)
