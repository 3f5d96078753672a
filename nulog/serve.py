"""`nulog serve`: the inference worker, so that the controller can answer /api/v1/predict without torch.

It loads the current model from the object store (the models bucket's root, where Opni's inference services
read it: a local store directory or MinIO, through `nulog.objectstore.MinioConfig`, the one MinIO client
configuration), reloads it when `model_ready` or `model_update` announces a model (the bucket payload
`{"bucket", "bucket_files": {"model_file", "vocab_file"}}`), and answers `nulog_predict` requests
(`PredictRequest` -> `PredictReply` or `PredictError`, in `training_controller.messages`) in a queue group, so
that several workers share the load. Requests that arrive together are batched into one model call, and the
results of recent masked lines are kept in the predict module's LRU cache, per model.

It never answers `gpu_service_running`: that subject is Opni's GPU inference service's, and answering it
would make the controller grant the GPU to inference batches nobody consumes.

With `--lazy` (the controller's embedded child) the model is loaded at the first request, so an idle worker
costs no torch import; without it (a Deployment) the model is loaded at start, ready for the first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from nulog.predict import LineResult, LRUCache
from nulog.serve_source import ModelSource, ServeConfig
from training_controller.core.masking import mask
from training_controller.messages import (
    WORKER_READY_LINE,
    LinePrediction,
    ModelFiles,
    ModelReady,
    ModelRef,
    PredictError,
    PredictReply,
    PredictRequest,
    Subjects,
    describe,
)

if TYPE_CHECKING:
    from nulog.predict import Predictor

log = logging.getLogger("nulog.serve")

QUEUE_GROUP = "nulog-serve"


@dataclass
class LoadedModel:
    """A model ready to predict, the reference replies name it by, and its cache of results."""

    predictor: Predictor
    ref: ModelRef
    bucket: str
    key: str
    cache: LRUCache[str, LineResult]


@dataclass(frozen=True)
class Wanted:
    """A model to load: where it is, and the job that trained it when an announcement said so."""

    bucket: str
    key: str
    job_id: str | None = None


@dataclass
class Pending:
    """One request waiting for its batch."""

    lines: list[str]
    reply: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class InferenceWorker:
    """Answers `nulog_predict` from the current model, reloaded when a new one is announced."""

    def __init__(self, config: ServeConfig, source: ModelSource | None = None) -> None:
        self.config = config
        self.source = source or ModelSource(config)
        self.model: LoadedModel | None = None
        self._wanted: Wanted | None = Wanted(config.bucket, config.model_file)
        self._reload = asyncio.Event()
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._load_lock = asyncio.Lock()
        self._nc: Any = None
        self._torch_ready = False

    # -- the model ---------------------------------------------------------------------------------------

    def _load_blocking(self, wanted: Wanted, current: LoadedModel | None) -> LoadedModel | None:
        """The wanted model, or `current` again when the file is the one already loaded."""
        path = self.source.fetch(wanted.bucket, wanted.key)
        digest = _sha256(path)
        if current is not None and current.ref.sha256 == digest:
            job_id = wanted.job_id or current.ref.job_id
            return replace(current, ref=current.ref.model_copy(update={"job_id": job_id}))
        import torch

        from nulog.checkpoint import load_checkpoint
        from nulog.predict import Predictor

        if not self._torch_ready:
            torch.set_num_threads(max(1, self.config.threads))
            self._torch_ready = True
        ckpt = load_checkpoint(path, device=self.config.device)
        predictor = Predictor(ckpt.model, ckpt.encoder, ckpt.parse)
        ref = ModelRef(job_id=wanted.job_id, sha256=digest, loaded_at=_now())
        return LoadedModel(predictor, ref, wanted.bucket, wanted.key, LRUCache(self.config.cache_size))

    async def load_wanted(self) -> None:
        """Load the model last asked for, if any; a missing or broken file leaves the current one."""
        async with self._load_lock:
            wanted, self._wanted = self._wanted, None
            if wanted is None:
                return
            started = time.monotonic()
            try:
                loaded = await asyncio.to_thread(self._load_blocking, wanted, self.model)
            except FileNotFoundError as e:
                log.info("no model to load yet: %s", e)
                return
            except Exception as e:  # a broken file or an unreachable store must not end the worker
                log.error("loading the model %s/%s failed: %s: %s", wanted.bucket, wanted.key, type(e).__name__, e)
                return
            if loaded is not self.model and (self.model is None or loaded.ref.sha256 != self.model.ref.sha256):
                log.info("model %s/%s loaded (job %s, sha256 %s) in %.1fs", wanted.bucket, wanted.key,
                         loaded.ref.job_id, loaded.ref.sha256[:12], time.monotonic() - started)
            self.model = loaded

    def want(self, wanted: Wanted) -> None:
        """Ask for a model to be loaded; announcements of the same file coalesce, keeping the job id."""
        before = self._wanted
        if before is not None and (before.bucket, before.key) == (wanted.bucket, wanted.key) and not wanted.job_id:
            wanted = before
        self._wanted = wanted
        if not self.config.lazy or self.model is not None:
            self._reload.set()

    async def _reloader(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            await self.load_wanted()

    # -- NATS --------------------------------------------------------------------------------------------

    async def on_model_ready(self, msg: Any) -> None:
        try:
            ready = ModelReady.model_validate_json(msg.data)
        except ValidationError as e:
            log.warning("ignored a model_ready that is not one: %s", describe(e))
            return
        self.want(Wanted(ready.bucket, ready.bucket_files.model_file, ready.job_id))

    async def on_model_update(self, msg: Any) -> None:
        try:
            files = ModelFiles.model_validate_json(msg.data)
        except ValidationError:
            if b'"reset"' in msg.data:
                log.info("model reset: the current model is dropped")
                self.model, self._wanted = None, None
            # {"status": "training"}: the previous model stays current until a new one is announced.
            return
        self.want(Wanted(files.bucket, files.bucket_files.model_file))

    async def on_predict(self, msg: Any) -> None:
        try:
            request = PredictRequest.model_validate_json(msg.data)
        except ValidationError as e:
            await self._respond(msg.reply, PredictError(error=f"invalid nulog_predict request: {describe(e)}",
                                                        reason="invalid_request"))
            return
        await self._queue.put(Pending(request.logs, msg.reply))

    async def _respond(self, reply: str, payload: PredictReply | PredictError) -> None:
        if not reply:
            return
        try:
            await self._nc.publish(reply, payload.model_dump_json().encode())
        except Exception as e:  # the requester times out and may ask again; nothing to undo
            log.warning("could not answer a nulog_predict request: %s", e)

    # -- batches ---------------------------------------------------------------------------------------

    async def _next_batch(self) -> list[Pending]:
        batch = [await self._queue.get()]
        lines = len(batch[0].lines)
        deadline = time.monotonic() + self.config.batch_wait_s
        while lines < self.config.batch_lines:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self._queue.get(), remaining)
            except (asyncio.QueueEmpty, TimeoutError):
                break
            batch.append(item)
            lines += len(item.lines)
        return batch

    def _predict_blocking(self, model: LoadedModel, lines: list[str]) -> list[tuple[str, LineResult]]:
        masked = [mask(line) for line in lines]
        todo = list(dict.fromkeys(m for m in masked if model.cache.get(m) is None))
        if todo:
            for m, result in zip(todo, model.predictor.predict(todo), strict=True):
                model.cache.put(m, result)
        out = []
        for m in masked:
            result = model.cache.get(m)
            assert result is not None  # put above; the cache holds far more than one batch's lines
            out.append((m, result))
        return out

    async def _batcher(self) -> None:
        while True:
            batch = await self._next_batch()
            if self.model is None or self._wanted is not None:
                await self.load_wanted()
            model = self.model
            if model is None:
                error = PredictError(error="the inference worker has no model: none has been trained (or it was "
                                     "reset); train one first", reason="no_model")
                for item in batch:
                    await self._respond(item.reply, error)
                continue
            lines = [line for item in batch for line in item.lines]
            try:
                results = await asyncio.to_thread(self._predict_blocking, model, lines)
            except Exception as e:  # one bad batch is answered with its error; the worker goes on
                log.exception("prediction failed")
                for item in batch:
                    await self._respond(item.reply, PredictError(error=f"prediction failed: {type(e).__name__}",
                                                                 reason="internal"))
                continue
            start = 0
            for item in batch:
                part = results[start : start + len(item.lines)]
                start += len(item.lines)
                predictions = [
                    LinePrediction(log=line, masked=m, template=r.template, score=round(r.score, 6), label=r.label)
                    for line, (m, r) in zip(item.lines, part, strict=True)
                ]
                await self._respond(item.reply, PredictReply(model=model.ref, predictions=predictions))

    async def run(self, stop: asyncio.Event, *, on_ready: Any = None) -> None:
        """Serve until `stop` is set."""
        import nats

        while not stop.is_set():
            try:
                self._nc = await nats.connect(
                    self.config.nats_url, name="nulog-serve", max_reconnect_attempts=-1, reconnect_time_wait=1
                )
                break
            except Exception as e:  # NATS not up yet: wait for it as the controller does
                log.warning("cannot connect to NATS at %s (%s); trying again", self.config.nats_url, e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
        if stop.is_set():
            return
        nc = self._nc
        await nc.subscribe(Subjects.MODEL_READY, cb=self.on_model_ready)
        await nc.subscribe(Subjects.MODEL_UPDATE, cb=self.on_model_update)
        if not self.config.lazy:
            await self.load_wanted()
        await nc.subscribe(Subjects.NULOG_PREDICT, queue=QUEUE_GROUP, cb=self.on_predict)
        await nc.flush()
        tasks = [asyncio.create_task(self._batcher(), name="batcher"),
                 asyncio.create_task(self._reloader(), name="reloader")]
        log.info("answering %s (queue group %s); model %s/%s%s", Subjects.NULOG_PREDICT, QUEUE_GROUP,
                 self.config.bucket, self.config.model_file, ", loaded at the first request" if self.config.lazy else "")
        if on_ready is not None:
            on_ready()
        try:
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):  # closing anyway
                await nc.close()


class _Lifeline(asyncio.Protocol):
    """Sets `stop` when stdin closes: the parent that holds its other end has gone, even by SIGKILL."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def data_received(self, data: bytes) -> None:
        pass  # nothing is ever sent; only the end of the pipe matters

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop.set()


async def serve(config: ServeConfig, *, exit_with_stdin: bool = False, announce_ready: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_with_stdin:
        await loop.connect_read_pipe(lambda: _Lifeline(stop), sys.stdin)

    def ready() -> None:
        if announce_ready:
            print(WORKER_READY_LINE, flush=True)

    await InferenceWorker(config).run(stop, on_ready=ready)
    log.info("stopped")


def main(args: Any) -> int:
    """`nulog serve` with the parsed arguments of `nulog.cli`."""
    try:
        config = ServeConfig.from_env(
            os.environ,
            nats_url=args.nats, store=args.store, local_dir=Path(args.local_store_dir) if args.local_store_dir else None,
            bucket=args.bucket, lazy=args.lazy or None, device=None if args.device == "auto" else args.device,
            threads=args.threads or None,
        )
    except ValueError as e:
        log.error("%s", e)
        return 2
    asyncio.run(serve(config, exit_with_stdin=args.exit_with_stdin, announce_ready=args.announce_ready))
    return 0
