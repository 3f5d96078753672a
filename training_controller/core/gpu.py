"""Whether the GPU is busy, and who may use it.

The GPU is taken by this controller's own training (between its JobStart and JobEnd) or by an external
trainer that announced `JobStart` on `gpu_trainingjob_status`. Both kinds of claim are stored state: the
controller's own claims are the job records with `gpu_held` (taken up by `load` before the first
`gpu_service_inference` is answered after a restart), the external ones live under `gpuTrainingState`. An
external trainer may die without its `JobEnd`; its claim then lapses after `reset_seconds` (Opni's
GPU_TRAINING_RESET_TIME, an hour) and the controller says so with `JobReset`, as Opni's does; a `JobReset`
from elsewhere voids every external claim too.

Inference may use the GPU only when no training holds it *and* the GPU inference service answers its
health check: a YES hands the batch to `gpu_service_inference_internal`, where nobody may listen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from training_controller.core.ports import StateStore

log = logging.getLogger(__name__)

GPU_STATE_KEY = "gpuTrainingState"


class GpuArbiter:
    """Tracks the claims on the GPU."""

    def __init__(self, state: StateStore, *, reset_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._own: set[str] = set()
        self._external: list[float] = []  # start times of external claims, oldest first
        self._changed = asyncio.Event()
        self.lapsed = 0  # external claims that lapsed and have not been announced with JobReset yet
        self.service_up = False  # the GPU inference service answered its last health check

    async def load(self, own: Iterable[str] = ()) -> None:
        """Take up the claims a previous controller left: its jobs that still hold the GPU, and the external
        claims it stored."""
        self._own.update(own)
        saved = await self._state.get_value(GPU_STATE_KEY) or {}
        # Union, not replace: a claim that arrived while this read was in flight is already in memory.
        self._external = sorted({*self._external, *(float(t) for t in saved.get("external_since", []))})
        if self._own:
            log.info("GPU held by job(s) %s, taken up from the stored records", ", ".join(sorted(self._own)))

    async def _save(self) -> None:
        await self._state.put_value(GPU_STATE_KEY, {"external_since": self._external})
        self._changed.set()

    def hold(self, job_id: str) -> None:
        """One of our jobs took the GPU (its record says so before JobStart goes out)."""
        self._own.add(job_id)

    def release(self, job_id: str) -> None:
        self._own.discard(job_id)
        self._changed.set()

    @property
    def own(self) -> frozenset[str]:
        return frozenset(self._own)

    async def external_start(self) -> None:
        self._external.append(self._clock())
        await self._save()

    async def external_end(self) -> None:
        if self._external:
            self._external.pop(0)
            await self._save()

    def _expire(self) -> None:
        if not self._external:
            return
        now = self._clock()
        kept = [t for t in self._external if now - t < self._reset_seconds]
        if len(kept) != len(self._external):
            log.warning(
                "an external training claimed the GPU without JobEnd for %.0fs; no longer counted", self._reset_seconds
            )
            self._external = kept

    def external_busy(self) -> bool:
        self._expire()
        return bool(self._external)

    def busy(self) -> bool:
        """Whether any training holds the GPU now."""
        return bool(self._own) or self.external_busy()

    def free_for_inference(self) -> bool:
        """No training holds the GPU, and the GPU inference service is there to take the batch."""
        return self.service_up and not self.busy()

    async def wait_until_external_free(self) -> None:
        """Return once no external trainer holds the GPU."""
        while self.external_busy():
            self._changed.clear()
            until_expiry = self._reset_seconds - (self._clock() - self._external[0])
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(0.05, min(until_expiry, 30.0)))
            except TimeoutError:
                pass
