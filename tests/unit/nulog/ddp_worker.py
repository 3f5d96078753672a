"""One rank of a small training for the distributed tests: `python -m tests.unit.nulog.ddp_worker OUT` with the
rendezvous variables set (or none, for one process). Trains the small model without dropout on synthetic
lines and, on rank 0, saves its weights and its logits on those lines to OUT."""

from __future__ import annotations

import sys

import torch

from nulog.distributed import Group, Rendezvous, World
from nulog.train import train

from .conftest import SMALL_MODEL, small_train, synthetic_lines

STEPS = 40


def main(out: str) -> None:
    rdv = Rendezvous.from_env()
    world = World() if rdv.world_size == 1 else Group.join(
        rdv, device=torch.device("cpu"), rendezvous_timeout_s=60, peer_timeout_s=20,
        on_peer_lost=lambda message: sys.exit(f"peer lost: {message}"))
    lines = synthetic_lines(300, seed=1)
    result = train(lines, small_train(epochs=2, min_steps=STEPS, batch_size=16), model_args=SMALL_MODEL,
                   device="cpu", world=world)
    if world.is_main:
        encoder, model = result.encoder, result.model
        ids, select, _ = encoder.pad([encoder.key(line) for line in lines[:64]], model.config.max_len)
        with torch.no_grad():
            logits = model.masked_logits(torch.from_numpy(ids), torch.from_numpy(select))
        torch.save({"state": model.state_dict(), "logits": logits, "steps": result.steps}, out)
    world.finish()


if __name__ == "__main__":
    main(sys.argv[1])
