"""The optimizer of this project's own model: AdamW in a few multi-tensor ops.

torch's own optimizers import torch._dynamo when first built: 1.4 s here on an idle machine, 2.5 s under load,
a third of `nulog parse` on a LogHub sample. Opni's architecture is trained with torch's Adam, since its
optimizer state must load into Opni's (`nulog.opni_model`), and its training is long enough not to notice.
"""

from __future__ import annotations

import math

import torch


class AdamW:
    """AdamW with decoupled weight decay, the update of torch.optim.AdamW; every parameter must have a
    gradient at each step."""

    def __init__(self, groups: list[dict], *, lr: float, betas: tuple[float, float], eps: float) -> None:
        self.param_groups = [{"lr": lr, **g} for g in groups]
        self.betas, self.eps = betas, eps
        self.step_count = 0
        self.exp_avg = [[torch.zeros_like(p) for p in g["params"]] for g in self.param_groups]
        self.exp_avg_sq = [[torch.zeros_like(p) for p in g["params"]] for g in self.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        b1, b2 = self.betas
        for g, m, v in zip(self.param_groups, self.exp_avg, self.exp_avg_sq, strict=True):
            params, grads = g["params"], [p.grad for p in g["params"]]
            if g["weight_decay"]:
                torch._foreach_mul_(params, 1.0 - g["lr"] * g["weight_decay"])
            torch._foreach_lerp_(m, grads, 1.0 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, value=1.0 - b2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, math.sqrt(1.0 - b2**self.step_count))
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(params, m, denom, value=-g["lr"] / (1.0 - b1**self.step_count))

    def state_dict(self) -> dict:
        return {"step": self.step_count, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        for mine, saved in ((self.exp_avg, state["exp_avg"]), (self.exp_avg_sq, state["exp_avg_sq"])):
            for group, values in zip(mine, saved, strict=True):
                for t, s in zip(group, values, strict=True):
                    t.copy_(s)
