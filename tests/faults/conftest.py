"""Fixtures of the fault-injection suite: a rig (nats-server + controller process + client) per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.faults.harness import Rig

# Epochs of a training that must still run when a fault lands (20-40 s on the 2-core CI machine); short
# ones for scenarios that only need a training to happen.
LONG_EPOCHS = 120
SHORT_EPOCHS = 1

MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path, sample_logs: Path) -> AsyncIterator[MakeRig]:
    rigs: list[Rig] = []

    async def make(*, epochs: int = SHORT_EPOCHS, logs: Path | None = None, **env: str) -> Rig:
        rig = Rig(tmp_path / f"rig{len(rigs)}", logs or sample_logs, epochs, {k.upper(): v for k, v in env.items()})
        rigs.append(rig)
        return await rig.start()

    yield make
    for rig in rigs:
        await rig.close()
