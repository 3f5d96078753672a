"""Template merging: templates of one event that the per-line rule split apart are joined again.

The model decides per line; a slot whose values repeat (a path seen five times) can be predicted in some
lines and not in others, which splits one event into several templates. A slot that is `<*>` in one line
and a constant in an otherwise identical line is a variable in both. Nothing here needs torch.
"""

from __future__ import annotations

from collections.abc import Iterable

from nulog.encoder import WILDCARD

Parts = tuple[str, ...]


def _compatible(a: Parts, b: Parts) -> bool:
    """Same length, and wherever they differ one of them is `<*>`; the shared constants outweigh the
    differences, so two mostly-variable templates are never joined."""
    if len(a) != len(b) or a == b:
        return False
    agree = differ = 0
    for x, y in zip(a, b, strict=True):
        if x == y:
            if x != WILDCARD and not x.isspace():
                agree += 1
        elif x == WILDCARD or y == WILDCARD:
            differ += 1
        else:
            return False
    return agree >= 1 and differ <= agree


def _join(a: Parts, b: Parts) -> Parts:
    return tuple(x if x == y else WILDCARD for x, y in zip(a, b, strict=True))


class TemplateMerger:
    """Joins each template it is given with the compatible ones it has seen; remembers across calls, so a
    stream is merged against everything before it."""

    def __init__(self) -> None:
        self._forward: dict[Parts, Parts] = {}  # a template -> the more general one it joined
        self._by_len: dict[int, list[Parts]] = {}  # the current most general templates, by length
        self._seen: set[Parts] = set()

    def add(self, templates: Iterable[Parts]) -> None:
        """Take in templates, in order."""
        for p in templates:
            if p in self._seen:
                continue
            self._seen.add(p)
            reps = self._by_len.setdefault(len(p), [])
            t = p
            while t not in reps:
                for i, r in enumerate(reps):
                    if _compatible(r, t):
                        joined = _join(r, t)
                        del reps[i]
                        for old in (r, t):
                            if old != joined:
                                self._forward[old] = joined
                        t = joined  # the join may now match another template: go round again
                        break
                else:
                    reps.append(t)

    def resolve(self, p: Parts) -> Parts:
        """The most general template p has been joined into."""
        while p in self._forward:
            p = self._forward[p]
        return p


def merge_templates(parts: list[Parts]) -> list[Parts]:
    """Each template of a list, joined with the compatible ones of the whole list."""
    merger = TemplateMerger()
    merger.add(parts)
    return [merger.resolve(p) for p in parts]
