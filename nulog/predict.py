"""The one prediction pipeline of `parse`, `templates` and `score`: lines in, a template and a score each.

A line's predictions depend only on its id sequence, so lines are grouped by it and the model runs once
per group, in length-sorted batches; a bounded LRU cache of sequences lets a long-running process skip the
model for those it has seen, and a bounded cache of lines skips tokenizing a line it has seen. `grouped=False`
runs the model once per line, the literal method the grouped path must agree with.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from nulog.config import ParseConfig
from nulog.encoder import Key, LineEncoder
from nulog.templates import Parts, TemplateMerger

if TYPE_CHECKING:
    from nulog.model import NuLog

# Lines per inference batch are capped by padded positions and by attention entries (B * H * T * T), so
# long lines do not blow up memory.
POSITIONS_PER_BATCH = 16384
ATTENTION_PER_BATCH = 1 << 25

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """A mapping that holds at most `maxsize` entries, dropping the least recently used."""

    def __init__(self, maxsize: int) -> None:
        assert maxsize > 0
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the model says about one id sequence."""

    keep: np.ndarray  # (L,) bool: the token is predicted and within the top k
    judged: int  # how many tokens were predicted
    hits: int  # how many of them within the top k
    parts: Parts | None  # the template before merging; None when only the line itself can render it

    @property
    def score(self) -> float:
        """Share of predicted tokens found within the top k; 1.0 for a line with nothing to predict."""
        return self.hits / self.judged if self.judged else 1.0


@dataclass(frozen=True, slots=True)
class LineResult:
    """Template, score and label of a line (shared by the lines of one id sequence)."""

    template: str
    score: float
    label: str  # "Anomaly" below the threshold, else "Normal"


class Predictor:
    """Templates and scores of lines from a trained model, one model pass per distinct id sequence."""

    def __init__(
        self,
        model: NuLog,
        encoder: LineEncoder,
        config: ParseConfig,
        *,
        cache_size: int = 100_000,
        line_cache_size: int = 200_000,
    ) -> None:
        self.model = model
        self.encoder = encoder
        self.config = config
        self.cache: LRUCache[Key, Judgement] = LRUCache(cache_size)
        self._merger = TemplateMerger() if config.merge else None
        self._key: Callable[[str], Key] = functools.lru_cache(maxsize=line_cache_size)(encoder.key)
        self.model_rows = 0  # id sequences the model has run on

    def judge(self, keys: Sequence[Key], *, use_cache: bool = True) -> dict[Key, Judgement]:
        """The model's judgement of each distinct id sequence; those not cached go through the model."""
        out: dict[Key, Judgement] = {}
        todo = []
        for key in keys:
            j = self.cache.get(key) if use_cache else None
            if j is None:
                todo.append(key)
            else:
                out[key] = j
        for batch in self._batches(todo):
            for key, j in zip(batch, self._run(batch), strict=True):
                out[key] = j
                if use_cache:
                    self.cache.put(key, j)
        return out

    def _batches(self, keys: list[Key]) -> Iterator[list[Key]]:
        max_len, heads = self.model.config.max_len, self.model.config.n_heads
        keys = sorted(keys, key=len)
        start = 0
        while start < len(keys):
            end = start + 1
            while end < len(keys):
                T, B = min(len(keys[end]) + 1, max_len), end - start + 1
                if B * T > POSITIONS_PER_BATCH or B * heads * T * T > ATTENTION_PER_BATCH:
                    break
                end += 1
            yield keys[start:end]
            start = end

    def _run(self, keys: list[Key]) -> list[Judgement]:
        import torch

        ids, select = self.encoder.pad(keys, self.model.config.max_len)  # (B, T), (B, T)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            sel = torch.from_numpy(select).to(device)
            hits = self.model.topk_hits(torch.from_numpy(ids).to(device), sel, self.config.k).cpu().numpy()
        finally:
            self.model.train(was_training)
        self.model_rows += len(keys)
        dense = np.zeros(select.shape, dtype=bool)  # (B, T)
        dense[select] = hits
        judged, found = select.sum(1).tolist(), dense.sum(1).tolist()
        out = []
        for r, key in enumerate(keys):
            keep = np.zeros(len(key), dtype=bool)
            n = min(len(key), ids.shape[1] - 1)
            keep[:n] = dense[r, 1 : n + 1]
            out.append(Judgement(keep, judged[r], found[r], self.encoder.render(key, keep)))
        return out

    def predict(self, lines: Sequence[str], *, grouped: bool = True) -> list[LineResult]:
        """A result per line, in order. Templates are merged with those of every earlier call."""
        if grouped:
            keys = list(map(self._key, lines))
            distinct = list(dict.fromkeys(keys))
            judged = self.judge(distinct)
        else:
            keys = [self.encoder.key(line) for line in lines]
            distinct = list(dict.fromkeys(keys))
            judged = {}
            for key in keys:  # one model pass per line, no cache
                judged[key] = self.judge([key], use_cache=False)[key]
        # Lines of a sequence the ids cannot render (unseen whitespace) are rendered one by one.
        rendered: dict[Key, list[tuple[int, Parts]]] = {}
        for key, j in judged.items():
            if j.parts is None:
                rendered[key] = []
        if rendered:
            for i, key in enumerate(keys):
                if key in rendered:
                    rendered[key].append((i, self.encoder.render_line(lines[i], judged[key].keep)))
        merger = self._merger
        if merger is not None:
            merger.add(p for key in distinct
                       for p in ([judged[key].parts] if key not in rendered else [q for _, q in rendered[key]]))
        threshold = self.config.threshold

        def result(parts: Parts, j: Judgement) -> LineResult:
            t = "".join(merger.resolve(parts) if merger is not None else parts)
            s = j.score
            return LineResult(t, s, "Anomaly" if s < threshold else "Normal")

        by_key = {key: result(j.parts, j) for key, j in judged.items() if j.parts is not None}
        out = [by_key.get(key) for key in keys]
        for key, rows in rendered.items():
            for i, parts in rows:
                out[i] = result(parts, judged[key])
        return out  # type: ignore[return-value]

    def stream(self, lines: Iterable[str], *, chunk: int = 65536) -> Iterator[tuple[str, LineResult]]:
        """(line, result) for every line of a stream, chunk by chunk: memory is bounded by the chunk and
        the caches, not by the input."""
        it = iter(lines)
        while batch := list(islice(it, chunk)):
            yield from zip(batch, self.predict(batch), strict=True)
