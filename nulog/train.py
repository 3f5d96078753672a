"""Training a NuLog model on log lines.

Lines are tokenized once per unique line; a step takes `batch_size` lines, padded only to the longest of
them, and trains on every predictable token of each line at once (the one-layer model computes all masked
variants in one pass). Nothing reads a value back from the GPU inside the step loop except the loss, at
most once per `progress_every_s`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from nulog.config import NuLogConfig
from nulog.data import Corpus, tokenize_unique
from nulog.model import NuLog
from nulog.tokenizer import Tokenizer, Vocab, is_variable

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where a training run stands; handed to the progress callback."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    elapsed_s: float
    epoch_end: bool

    @property
    def percent(self) -> float:
        return 100.0 * self.step / self.steps if self.steps else 100.0

    @property
    def eta_s(self) -> float:
        return self.elapsed_s / self.step * (self.steps - self.step) if self.step else 0.0


@dataclass
class TrainResult:
    """A trained model with everything needed to save and report it."""

    model: NuLog
    vocab: Vocab
    config: NuLogConfig
    steps: int
    final_loss: float
    seconds: float
    masked_tokens: int  # predictions trained on, over all epochs
    lines: int
    unique_lines: int
    device: str

    @property
    def tokens_per_s(self) -> float:
        return self.masked_tokens / self.seconds if self.seconds > 0 else 0.0


def learning_rate(step: int, total_steps: int, config: NuLogConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr`."""
    warmup = min(config.warmup_steps, max(1, total_steps // 10))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when there is one."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) so a run repeats."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def sample_weights(token_lists: list[list[str]], counts: list[int]) -> np.ndarray:
    """Per unique line, a sampling weight that lifts rare line shapes: 1/sqrt(how often the shape occurs).

    A shape is the line with its variable tokens blanked out, so lines that differ only in ids count as one.
    """
    shapes = [tuple("\0" if is_variable(t) else t for t in tokens) for tokens in token_lists]
    shape_count: Counter[tuple[str, ...]] = Counter()
    for s, c in zip(shapes, counts, strict=True):
        shape_count[s] += c
    w = np.array([c / math.sqrt(shape_count[s]) for s, c in zip(shapes, counts, strict=True)], dtype=np.float64)
    return w / w.sum()


# Attention entries (B * H * T * T) one training batch of long lines may hold.
ATTENTION_PER_BATCH = 1 << 25


def make_batches(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator, *, n_heads: int = 8
) -> list[np.ndarray]:
    """Cut one epoch's shuffled rows into batches; outlier-long lines get batches of their own.

    Batches stay random (sorting every batch by length makes them near-uniform in content, which trains
    markedly worse), but one 200-token line would pad a whole batch of 20-token lines tenfold. Batches of
    long lines are also kept small enough for their attention matrices.
    """
    cut = max(32.0, 2.0 * float(np.percentile(lengths[order], 90)))
    is_long = lengths[order] > cut
    short, long = order[~is_long], order[is_long]
    long = long[np.argsort(lengths[long], kind="stable")]
    batches = [short[i : i + batch_size] for i in range(0, len(short), batch_size)]
    i = 0
    while i < len(long):
        j = i + 1
        while j < len(long) and j - i < batch_size and (j - i + 1) * n_heads * lengths[long[j]] ** 2 <= ATTENTION_PER_BATCH:
            j += 1
        batches.append(long[i:j])
        i = j
    return [batches[i] for i in rng.permutation(len(batches))]


def _optimizer(model: NuLog, config: NuLogConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if next(model.parameters()).device.type in ("cpu", "cuda") else {}
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-9, **fused)


def train(
    lines: list[str],
    config: NuLogConfig,
    *,
    device: str | torch.device = "auto",
    on_progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 1.0,
) -> TrainResult:
    """Build a vocabulary from the lines and train a model on them."""
    if not lines:
        raise ValueError("no log lines to train on")
    t0 = time.monotonic()
    device = resolve_device(device) if isinstance(device, str) else device
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)

    tokenizer = Tokenizer(config.filters)
    unique, token_lists, where = tokenize_unique(lines, tokenizer)
    counts = np.bincount(np.asarray(where), minlength=len(unique))
    vocab = Vocab.build(token_lists)
    config = replace(config, vocab_size=len(vocab))
    corpus = Corpus.build(token_lists, vocab, max_len=config.max_len)
    log.info("training on %d lines (%d unique), vocabulary of %d tokens", len(lines), len(unique), len(vocab))

    # Every epoch draws its lines as rows of the unique-line table.
    if config.num_samples > 0:
        weights = sample_weights(token_lists, counts.tolist())
        per_epoch = config.num_samples
    else:
        occurrences = np.arange(len(unique)) if config.dedupe else np.repeat(np.arange(len(unique)), counts)
        per_epoch = len(occurrences)
    plan: list[list[np.ndarray]] = []  # every epoch's batches, drawn up front so the step count is known
    for _ in range(config.epochs):
        if config.num_samples > 0:
            order = rng.choice(len(unique), size=per_epoch, replace=True, p=weights)
        else:
            order = rng.permutation(occurrences)
        plan.append(make_batches(order, corpus.lengths, config.batch_size, rng, n_heads=config.n_heads))
    total_steps = sum(len(batches) for batches in plan)

    model = NuLog(config).to(device)
    optimizer = _optimizer(model, config)
    target_counts = corpus.target_counts
    # The whole plan goes to the device once; each step slices it there, so no step waits for a copy.
    plan_rows = torch.from_numpy(np.concatenate([b for batches in plan for b in batches])).to(device)
    corpus = corpus.to(device)
    use_cuda = device.type == "cuda"
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_cuda)

    model.train()
    step = 0
    masked_tokens = 0
    loss_sum = torch.zeros((), device=device)  # this epoch's, read back only when reporting
    last_report = time.monotonic()
    final_loss = float("nan")
    start = 0
    for epoch in range(1, config.epochs + 1):
        batches = plan[epoch - 1]
        loss_sum.zero_()
        for b, rows_np in enumerate(batches):
            masked_tokens += int(target_counts[rows_np].sum())
            rows = plan_rows[start : start + len(rows_np)]
            start += len(rows_np)
            idx, tgt = corpus.batch(rows, int(corpus.lengths[rows_np].max()))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, config)
            with autocast:
                # On CUDA the dense form avoids boolean indexing, which would wait for the GPU.
                _, loss = model(idx, tgt) if use_cuda else model(idx, tgt, select=tgt >= 0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            loss_sum += loss.detach()
            now = time.monotonic()
            epoch_end = b == len(batches) - 1
            if epoch_end or now - last_report >= progress_every_s:
                final_loss = float(loss_sum.item()) / (b + 1)  # mean over the epoch so far
                last_report = now
                if on_progress is not None:
                    on_progress(Progress(epoch, config.epochs, step, total_steps, final_loss, now - t0, epoch_end))
        log.info("epoch %d/%d done, loss %.4f", epoch, config.epochs, final_loss)
    model.eval()
    seconds = time.monotonic() - t0
    return TrainResult(
        model=model,
        vocab=vocab,
        config=config,
        steps=step,
        final_loss=final_loss,
        seconds=seconds,
        masked_tokens=masked_tokens,
        lines=len(lines),
        unique_lines=len(unique),
        device=str(device),
    )
