"""Shared fixtures: a synthetic log corpus with known templates and a small model trained on it."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from nulog.config import ParseConfig, TrainConfig
from nulog.train import TrainResult, train

TEMPLATES = [
    "Receiving block blk_{n} src: /{ip}:{port} dest: /{ip}:{port}",
    "PacketResponder {d} for block blk_{n} terminating",
    "Verification succeeded for blk_{n}",
    "Deleting block blk_{n} file /mnt/data/current/subdir{d}/blk_{n}",
    "BLOCK* NameSystem.allocateBlock: /user/root/rand/_temporary/part-{d}. blk_{n}",
    "Served block blk_{n} to /{ip}",
]


def draw_lines(templates: list[str], n: int, *, seed: int, fill: Callable[[random.Random, str], str]) -> list[str]:
    """n lines, each a template drawn from `templates` and filled in by `fill` from the same generator."""
    rng = random.Random(seed)
    return [fill(rng, rng.choice(templates)) for _ in range(n)]


def _fill_hdfs(rng: random.Random, t: str) -> str:
    while "{" in t:
        t = (
            t.replace("{n}", str(rng.randrange(10**9, 10**10)), 1)
            .replace("{ip}", f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}", 1)
            .replace("{port}", str(rng.randrange(1024, 65535)), 1)
            .replace("{d}", str(rng.randrange(10)), 1)
        )
    return t


def synthetic_lines(n: int, *, seed: int = 0) -> list[str]:
    """n lines drawn from TEMPLATES with random numbers filled in."""
    return draw_lines(TEMPLATES, n, seed=seed, fill=_fill_hdfs)


# A model small enough to train in a second or two on CPU.
SMALL_MODEL = dict(d_model=32, n_heads=4, d_ff=64, dropout=0.0, max_len=64)
SMALL_PARSE = ParseConfig(k=3)


def small_train(**overrides) -> TrainConfig:
    """Training settings for SMALL_MODEL."""
    base = dict(epochs=4, batch_size=16, lr=3e-3, warmup_steps=5, min_steps=150, seed=0)
    base.update(overrides)
    return TrainConfig(**base)


def train_small(lines: list[str], *, model: dict | None = None, on_progress=None, **overrides) -> TrainResult:
    return train(lines, small_train(**overrides), model_args={**SMALL_MODEL, **(model or {})}, parse=SMALL_PARSE,
                 device="cpu", on_progress=on_progress)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return synthetic_lines(300)


@pytest.fixture(scope="session")
def trained(corpus: list[str]) -> TrainResult:
    return train_small(corpus)
