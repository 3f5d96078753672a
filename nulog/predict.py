"""The one prediction pipeline of `parse`, `templates` and `score`: lines in, a template and a score each.

A line's predictions depend only on its id sequence, so lines are grouped by it and the model runs once
per group, in length-sorted batches; a bounded LRU cache of sequences lets a long-running process skip the
model for those it has seen, and a bounded cache of lines skips tokenizing a line it has seen. `grouped=False`
runs the model once per line, the literal method the grouped path must agree with.

A line's template therefore depends on its id sequence and on the templates before it (merging), never on
which other lines share its batch: both paths give the same results.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from nulog.config import ParseConfig
from nulog.encoder import Key, LineEncoder
from nulog.templates import Parts, TemplateMerger

if TYPE_CHECKING:
    from nulog.model import NuLog
    from nulog.opni_encoder import OpniEncoder
    from nulog.opni_model import OpniNuLog

# Lines per inference batch are capped by padded positions and by attention entries (B * H * T * T), so
# long lines do not blow up memory.
POSITIONS_PER_BATCH = 16384
ATTENTION_PER_BATCH = 1 << 25

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while lines are encoded: that makes many small tuples and strings,
    none in a cycle, and each of the collector's passes over them would be wasted work."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
        model: NuLog | OpniNuLog,
        encoder: LineEncoder | OpniEncoder,
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
        # Lines seen -> a small int naming their id sequence, so that per line only ints are hashed.
        self.line_cache_size = line_cache_size
        self._line_index: dict[str, int] = {}
        self._keys: list[Key] = []
        self._key_index: dict[Key, int] = {}
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
        """Keys in batches of similar model-input length (whitespace and delimiters are left out), within the caps."""
        max_len, heads = self.model.config.max_len, self.model.config.n_heads
        length = self.encoder.input_length
        lengths = [length(k, max_len) for k in keys]
        order = sorted(range(len(keys)), key=lengths.__getitem__)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order):
                T, B = lengths[order[end]], end - start + 1
                if B * T > POSITIONS_PER_BATCH or B * heads * T * T > ATTENTION_PER_BATCH:
                    break
                end += 1
            yield [keys[i] for i in order[start:end]]
            start = end

    def _run(self, keys: list[Key]) -> list[Judgement]:
        import torch

        ids, select, where = self.encoder.pad(keys, self.model.config.max_len)  # (B, T), (B, T), B x (T',)
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
        # The whole batch's keep flags and templates at once, over the sequences laid end to end.
        lengths = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
        starts = np.concatenate([[0], np.cumsum(lengths)])
        n_in = np.fromiter(map(len, where), dtype=np.int64, count=len(keys))  # (B,) model positions per row
        keep = np.zeros(int(starts[-1]), dtype=bool)
        keep[np.concatenate(where) + np.repeat(starts[:-1], n_in)] = dense[:, 1:][
            np.arange(dense.shape[1] - 1)[None, :] < n_in[:, None]]
        parts = self.encoder.render_many(keys, keep)
        return [Judgement(keep[starts[r] : starts[r + 1]], judged[r], found[r], parts[r]) for r in range(len(keys))]

    def _index(self, lines: Sequence[str]) -> list[int]:
        """For each line, the index of its id sequence in self._keys; new lines are encoded together."""
        known = self._line_index
        if len(known) > self.line_cache_size:  # bounded: start again rather than track recency per line
            known.clear()
            self._keys.clear()
            self._key_index.clear()
        new = [line for line in dict.fromkeys(lines) if line not in known]
        with gc_paused():
            for line, key in zip(new, self.encoder.keys(new), strict=True):
                i = self._key_index.get(key)
                if i is None:
                    i = self._key_index[key] = len(self._keys)
                    self._keys.append(key)
                known[line] = i
            return list(map(known.__getitem__, lines))

    def predict(self, lines: Sequence[str], *, grouped: bool = True) -> list[LineResult]:
        """A result per line, in order. Templates are merged with those of every earlier call."""
        if not grouped:  # every line a sequence of its own, one model pass each, no cache
            keys = [self.encoder.key(line) for line in lines]
            return self._results(lines, list(range(len(lines))),
                                 {i: self.judge([k], use_cache=False)[k] for i, k in enumerate(keys)})
        index = self._index(lines)
        seqs = {i: self._keys[i] for i in dict.fromkeys(index)}
        judged = self.judge(list(seqs.values()))
        return self._results(lines, index, {i: judged[k] for i, k in seqs.items()})

    def _results(self, lines: Sequence[str], index: list[int], of: dict[int, Judgement]) -> list[LineResult]:
        """Results of lines from the judgement of each one's sequence (index: line -> sequence, `of` in the
        order the sequences first come)."""
        # Templates go to the merger in the order their lines come; a sequence holding unseen whitespace
        # is rendered line by line.
        per_line: dict[int, Parts] = {}
        if any(j.parts is None for j in of.values()):
            per_line = {n: self.encoder.render_line(lines[n], of[i].keep)
                        for n, i in enumerate(index) if of[i].parts is None}
            order = [per_line[n] if n in per_line else of[i].parts for n, i in enumerate(index)]
        else:
            order = [j.parts for j in of.values()]
        merger = self._merger
        if merger is not None:
            merger.add(order)  # type: ignore[arg-type]
        threshold = self.config.threshold

        def result(parts: Parts, j: Judgement) -> LineResult:
            t = "".join(merger.resolve(parts) if merger is not None else parts)
            s = j.score
            return LineResult(t, s, "Anomaly" if s < threshold else "Normal")

        by_index = {i: result(j.parts, j) for i, j in of.items() if j.parts is not None}
        out = list(map(by_index.get, index))
        for n, parts in per_line.items():
            out[n] = result(parts, of[index[n]])
        return out  # type: ignore[return-value]

    def stream(self, lines: Iterable[str], *, chunk: int = 32768) -> Iterator[tuple[str, LineResult]]:
        """(line, result) for every line of a stream, chunk by chunk: memory is bounded by the chunk and
        the caches, not by the input."""
        it = iter(lines)
        while batch := list(islice(it, chunk)):
            yield from zip(batch, self.predict(batch), strict=True)
