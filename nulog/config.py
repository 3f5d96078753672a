"""The three typed configurations of NuLog: the model's shape, how it is trained, how its predictions are read.

`ModelConfig` is frozen and needs the vocabulary's size, so a model can only be built once its vocabulary
exists; training takes its other fields as `model_args` (as nanoGPT builds `GPTConfig`). All three are saved
in every checkpoint. This module imports nothing heavy: the controller side may read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import cache
from typing import Any, Literal, Self, get_args, get_origin, get_type_hints

# Splits on whitespace runs and common punctuation; the delimiters are kept as tokens so that a line can
# always be rebuilt from its tokens.
DEFAULT_FILTERS = r"""(\s+|[:=,;()\[\]{}"'|])"""


@cache
def _choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """The values each `Literal` field of a config class may hold."""
    return {name: get_args(hint) for name, hint in get_type_hints(cls).items() if get_origin(hint) is Literal}


class _Dict:
    def __post_init__(self) -> None:
        for name, allowed in _choices(type(self)).items():
            value = getattr(self, name)
            assert value in allowed, f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}"

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-safe dict."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild a config, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


class _Shape(_Dict):
    """What the shape of a model holds, whichever the architecture."""

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.d_model % self.n_heads == 0, "d_model must be a multiple of n_heads"  # type: ignore[attr-defined]
        assert self.max_len >= 2  # type: ignore[attr-defined]


@dataclass(frozen=True, kw_only=True)
class ModelConfig(_Shape):
    """Shape of one NuLog model."""

    vocab_size: int
    max_len: int = 256  # positions the model sees, <CLS> included; longer lines are cut for prediction
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 1  # NuLog's default; with 1 layer all masked predictions of a line take one pass
    d_ff: int = 256
    dropout: float = 0.1
    readout: Literal["mask", "cls"] = "mask"  # predict from the masked position, or from <CLS> as the paper

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.vocab_size > 0, "vocab_size comes from the vocabulary and must be positive"


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_Dict):
    """How a model is trained, and how its vocabulary is built from the training lines."""

    filters: str = DEFAULT_FILTERS  # token-splitting regex, saved with the vocabulary
    # A digit-bearing token gets an id of its own when it recurs (in this many distinct lines) and holds its
    # slot: see `tokenizer.constant_digit_tokens`. Every other one shares `<NUM>`.
    digit_min_lines: int = 3
    digit_slot_share: float = 0.9
    epochs: int = 5
    batch_size: int = 16  # lines drawn per step; the model runs on the distinct id sequences among them
    # A line's id sequence is drawn as often as it occurs ("lines": the line-level loss), or every distinct
    # sequence alike ("sequences"), or by the square root of its count ("sqrt"; see nulog.train).
    weighting: Literal["lines", "sequences", "sqrt"] = "sqrt"
    min_steps: int = 300  # steps of a corpus of few distinct sequences (an epoch is one pass over them)
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.epochs >= 1 and self.batch_size >= 1


@dataclass(frozen=True, kw_only=True)
class ParseConfig(_Dict):
    """How predictions become templates and scores; a model's defaults, overridable per call."""

    k: int = 10  # a token predicted within the top k is part of the template
    threshold: float = 0.7  # score below it -> Anomaly
    merge: bool = True  # unify templates that differ only where one has `<*>` (see `parse.TemplateMerger`)


@dataclass(frozen=True, kw_only=True)
class OpniConfig(_Shape):
    """Shape of Opni's NuLog model, as its inference service builds it (`make_model(10000, 10000, N=1,
    d_model=256, d_ff=256, dropout=0.1, max_len=64)`, 8 heads); `nulog.opni_model` has the sources."""

    vocab_size: int = 10_000
    max_len: int = 64  # Opni's pad_len: lines are cut to 64 tokens, <CLS> included
    d_model: int = 256
    n_heads: int = 8
    n_layers: Literal[1] = 1  # Opni's model has one encoder layer; the one-pass prediction relies on it
    d_ff: int = 256
    dropout: float = 0.1
