"""Training a NuLog model on log lines.

The model's input is a line's id sequence, so training works on distinct id sequences: each step of the plan
(`nulog.plan`: which sequences, drawn by their line counts, and their loss weights) trains on every predicted
token of its sequences at once (the one-layer model computes all masked variants in one pass). With
weighting "lines" a step's loss is exactly the line-level loss of lines drawn from the input; the default
"sqrt" lifts rare sequences (on four LogHub samples and two seeds it was as accurate or better: BGL 0.9975
against 0.9955 and 0.9940). Nothing reads a value back from the GPU inside the step loop except the loss, at
most once per `progress_every_s`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nulog.checkpoint import Checkpoint
from nulog.config import ModelConfig, OpniConfig, ParseConfig, TrainConfig
from nulog.distributed import World
from nulog.encoder import Key, LineEncoder
from nulog.model import NuLog
from nulog.opni_encoder import OpniEncoder
from nulog.opni_model import OpniNuLog
from nulog.optim import AdamW  # noqa: F401 - where callers found it before it had a module of its own
from nulog.plan import Corpus, Plan, draw_probabilities, forward_parts

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
    """A trained model, ready to save (`checkpoint`) and to report."""

    checkpoint: Checkpoint
    steps: int
    final_loss: float
    seconds: float  # all of it: vocabulary, encoding and steps
    step_seconds: float  # the optimisation steps alone
    step_cpu_seconds: float  # this process's CPU time in them (other work on the machine does not inflate it)
    masked_tokens: int  # predictions trained on, over all steps
    lines: int
    distinct_lines: int
    sequences: int  # distinct id sequences among the lines
    device: str
    start_step: int = 0  # the step it resumed from (0: from the start)

    @property
    def model(self) -> NuLog | OpniNuLog:
        return self.checkpoint.model

    @property
    def encoder(self) -> LineEncoder | OpniEncoder:
        return self.checkpoint.encoder

    @property
    def tokens_per_s(self) -> float:
        """Masked predictions trained per second of the steps."""
        return self.masked_tokens / self.step_seconds if self.step_seconds > 0 else 0.0


def learning_rate(step: int, total_steps: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr`."""
    warmup = min(config.warmup_steps, max(1, total_steps // 10))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def retain_freed_memory() -> None:
    """Keep memory that torch frees for the next step instead of handing it back to the OS (glibc only).

    glibc serves every block over its mmap threshold with a fresh mapping and unmaps it when freed, so a
    gradient of 10 MB (Opni's 10000-word embedding) is page-faulted in anew at every step: system time was
    40% of that model's training on CPU, and a step took 70 ms instead of 25 ms.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to tune, and nothing wrong
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when there is one."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def training_fingerprint(lines: Sequence[str], config: TrainConfig, model: NuLog | OpniNuLog) -> str:
    """What a training is: its lines in order, its settings and its model's shape. A checkpoint resumes only
    the training of the same fingerprint, and every rank must hold the same."""
    h = hashlib.sha256()
    h.update(json.dumps([type(model).__name__, config.to_dict(), model.config.to_dict()], sort_keys=True).encode())
    for i in range(0, len(lines), 8192):
        h.update("\n".join(lines[i : i + 8192]).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


class CheckpointMismatch(ValueError):
    """The checkpoint to resume belongs to another training (other lines or settings)."""


def _new_model(arch: str, per_line: Counter[str], config: TrainConfig, model_args: dict | None
               ) -> tuple[LineEncoder | OpniEncoder, Counter[Key], NuLog | OpniNuLog]:
    if arch == "opni":
        opni_encoder, counted = OpniEncoder.fit_count(per_line)
        return opni_encoder, counted, OpniNuLog(OpniConfig(**(model_args or {})))
    assert arch == "nulog", f"unknown model architecture {arch!r}"
    encoder, counted = LineEncoder.fit_count(per_line, config)
    return encoder, counted, NuLog(ModelConfig(vocab_size=len(encoder.vocab), **(model_args or {})))


def shard(rows: np.ndarray, lengths: np.ndarray, world: World) -> np.ndarray:
    """Positions (into rows, a step's sequences) that this rank trains on: dealt out in order of length, so
    every rank gets about as many sequences and as many tokens, and the same on every rank."""
    if world.size == 1:
        return np.arange(len(rows))
    order = np.argsort(lengths[rows], kind="stable")
    return np.sort(order[world.rank :: world.size])


class _GradientSum:
    """The sum over the ranks of every trained parameter's gradient and of the step's loss, in one
    all-reduce of one flat buffer (what DDP does in buckets during the backward pass; a step here may have
    no forward pass on a rank, or several)."""

    def __init__(self, params: list[torch.nn.Parameter], device: torch.device) -> None:
        self.params = params
        self.flat = torch.zeros(sum(p.numel() for p in params) + 1, device=device)

    def __call__(self, world: World, loss: torch.Tensor) -> torch.Tensor:
        views, off = [], 0
        for p in self.params:
            view = self.flat[off : off + p.numel()]
            if p.grad is None:
                view.zero_()
            else:
                view.copy_(p.grad.reshape(-1))
            views.append(view)
            off += p.numel()
        self.flat[-1] = loss
        world.all_reduce_(self.flat)
        for p, view in zip(self.params, views, strict=True):
            p.grad = view.view_as(p)
        return self.flat[-1].clone()


def train(
    lines: Sequence[str],
    config: TrainConfig,
    *,
    model_args: dict | None = None,
    parse: ParseConfig | None = None,
    resume: Checkpoint | None = None,
    device: str | torch.device = "auto",
    on_progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 1.0,
    stop_after: int | None = None,
    threads: int = 1,
    arch: str = "nulog",
    world: World | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    checkpoint_every_s: float = 300.0,
) -> TrainResult:
    """Train a model on the lines: a new one, with its vocabulary built from them and `model_args` as its
    shape (the config fields of the architecture, `arch` "nulog" or "opni", but vocab_size), or the one of
    `resume`, from its step on (it must be of the same training: `CheckpointMismatch`). With stop_after,
    stop once that many steps are done; the result's checkpoint resumes from there.

    With a `world` of several ranks, every rank calls this with the same lines and settings: each trains on
    its share of every step's sequences (`shard`), the gradients are summed over the ranks, and every rank
    takes the same step, so the ranks' models stay equal and equal to the one a single process would train
    (up to the order of float sums). Rank 0 hands a checkpoint to `on_checkpoint` every `checkpoint_every_s`.

    On CPU, torch runs on `threads` threads. A step is many small ops; measured on a 2-core machine shared
    with other work, HDFS 2k trained in 2.5-3.2 s on one thread and 22-27 s on two, which wait on each
    other's busy core."""
    if not lines:
        raise ValueError("no log lines to train on")
    t0 = time.monotonic()
    world = world or World()
    device = resolve_device(device) if isinstance(device, str) else device
    if device.type == "cpu":
        torch.set_num_threads(threads)
        retain_freed_memory()
    torch.manual_seed(config.seed)

    per_line = Counter(lines)
    if resume is None:
        encoder, counted, model = _new_model(arch, per_line, config, model_args)
        start_step = 0
        fingerprint = training_fingerprint(lines, config, model)
    else:
        encoder, model, start_step = resume.encoder, resume.model, resume.step
        fingerprint = training_fingerprint(lines, config, model)
        if resume.fingerprint is not None and resume.fingerprint != fingerprint:
            raise CheckpointMismatch("the checkpoint belongs to another training: its lines or settings differ "
                                     "from these")
        counted = encoder.count(per_line)
    keys = list(counted)
    corpus = Corpus.build(keys, encoder, max_len=model.config.max_len)
    log.info("training on %d lines (%d distinct id sequences), vocabulary of %d tokens",
             len(lines), len(keys), len(encoder.vocab))
    plan = Plan.draw(corpus, draw_probabilities(np.array(list(counted.values())), config.weighting), config)

    model.to(device)
    trained = model.trained_parameters()
    if world.size > 1:
        world.agree("lines, settings or checkpoint step", f"{fingerprint} {start_step}".encode())
        state = torch.nn.utils.parameters_to_vector(trained).detach()
        world.broadcast_(state)  # every rank starts from rank 0's weights, as DDP does
        torch.nn.utils.vector_to_parameters(state, trained)
        torch.manual_seed(config.seed + 1000003 * world.rank)  # dropout of one rank's share is its own
        gradient_sum = _GradientSum(trained, device)
    optimizer = model.configure_optimizer(config)
    if resume is not None and resume.optimizer is not None:
        optimizer.load_state_dict(resume.optimizer)
    # The whole plan goes to the device once; each step slices it there, so no step waits for a copy.
    plan_rows = torch.from_numpy(plan.rows).to(device)
    plan_weights = torch.from_numpy(plan.weights).to(device)
    corpus = corpus.to(device)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def checkpoint(step: int) -> Checkpoint:
        return Checkpoint(model=model, encoder=encoder, parse=parse, train=config, step=step,
                          optimizer=optimizer.state_dict(), fingerprint=fingerprint)

    parse = parse or (resume.parse if resume is not None else ParseConfig())
    model.train()
    t_steps = last_checkpoint = time.monotonic()
    cpu_steps = time.process_time()
    masked_tokens = done = 0
    loss_sum = torch.zeros((), device=device)  # this epoch's, read back only when reporting
    last_report = time.monotonic()
    final_loss = float("nan")
    epochs = config.epochs
    end_step = plan.steps if stop_after is None else min(plan.steps, stop_after)
    for step in range(start_step, end_step):
        a, b = int(plan.starts[step]), int(plan.starts[step + 1])
        rows_np = plan.rows[a:b]
        masked_tokens += int(corpus.predicted[rows_np].sum())  # of the whole step, over every rank
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, plan.steps, config)
        optimizer.zero_grad(set_to_none=True)
        mine = shard(rows_np, corpus.lengths, world)
        step_loss = torch.zeros((), device=device)
        for part in forward_parts(rows_np[mine], corpus.lengths, model.config.n_heads) if len(mine) else []:
            at = mine[part]
            whole = len(at) == b - a
            rows = plan_rows[a:b] if whole else plan_rows[a:b][torch.from_numpy(at).to(device)]
            w = plan_weights[a:b] if whole else plan_weights[a:b][torch.from_numpy(at).to(device)]
            ids, targets = corpus.batch(rows, int(corpus.lengths[rows_np[at]].max()))
            with autocast:
                _, loss = model(ids, targets, weights=torch.where(targets >= 0, w[:, None], 0.0))
            loss.backward()
            step_loss += loss.detach()
        if world.size > 1:
            step_loss = gradient_sum(world, step_loss)
        loss_sum += step_loss
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trained, config.grad_clip)
        optimizer.step()
        done += 1
        epoch, in_epoch = divmod(step, plan.steps_per_epoch)
        now = time.monotonic()
        epoch_end = in_epoch == plan.steps_per_epoch - 1
        if epoch_end or now - last_report >= progress_every_s:
            final_loss = float(loss_sum.item()) / done  # mean over the epoch so far
            last_report = now
            if on_progress is not None:
                on_progress(Progress(epoch + 1, epochs, step + 1, plan.steps, final_loss, now - t0, epoch_end))
            if epoch_end:
                log.info("epoch %d/%d done, loss %.4f", epoch + 1, epochs, final_loss)
                loss_sum.zero_()
                done = 0
        if on_checkpoint is not None and world.is_main and now - last_checkpoint >= checkpoint_every_s \
                and step + 1 < end_step:
            on_checkpoint(checkpoint(step + 1))
            last_checkpoint = time.monotonic()
    step = max(start_step, end_step)
    model.eval()
    return TrainResult(
        checkpoint=checkpoint(step), steps=step, final_loss=final_loss, seconds=time.monotonic() - t0,
        step_seconds=time.monotonic() - t_steps, step_cpu_seconds=time.process_time() - cpu_steps,
        masked_tokens=masked_tokens, lines=len(lines),
        distinct_lines=len(per_line), sequences=len(keys), device=str(device), start_step=start_step,
    )
