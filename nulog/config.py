"""The one typed configuration of a NuLog model and its training, saved inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# Splits on whitespace runs and common punctuation; the delimiters are kept as tokens so that a line can
# always be rebuilt from its tokens.
DEFAULT_FILTERS = r"""(\s+|[:=,;()\[\]{}"'|])"""


@dataclass
class NuLogConfig:
    """Model shape, tokenizer and training settings of one NuLog model."""

    # model
    d_model: int = 256
    n_heads: int = 8
    n_layers: int = 1  # NuLog's default; with 1 layer all masked predictions of a line take one pass
    d_ff: int = 512
    dropout: float = 0.1
    max_len: int = 256  # positions the model sees, <CLS> included; longer lines are cut for prediction
    readout: str = "mask"  # "mask": predict from the masked position; "cls": from <CLS> as the paper does
    vocab_size: int = 0  # set from the vocabulary when a model is built
    # tokenizer
    filters: str = DEFAULT_FILTERS
    # parsing and scoring
    k: int = 10  # a token predicted within the top k is part of the template
    threshold: float = 0.7  # score below it -> Anomaly
    # training
    epochs: int = 5
    batch_size: int = 16  # lines per optimisation step; steps are overhead-bound on CPU, so small is cheap
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    num_samples: int = 0  # > 0: train on this many lines drawn with replacement, rare lines weighted up
    dedupe: bool = False  # an epoch visits each distinct line once; masked production logs repeat a lot
    seed: int = 0

    def __post_init__(self) -> None:
        assert self.d_model % self.n_heads == 0, "d_model must be a multiple of n_heads"
        assert self.readout in ("mask", "cls"), f"unknown readout {self.readout!r}"
        assert self.max_len >= 2

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-safe dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NuLogConfig:
        """Rebuild a config, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
