"""The thin layer over nats-py: connect, serve subjects, publish, consume a stream, key-value buckets.

A route names a subject, the pydantic model of its payload and a handler. The bus decodes and validates
each message, calls the handler, and replies when the message has a reply subject. Whatever goes wrong, a
requester gets an answer: an `ErrorReply` that says what (bad payload, unknown job, internal error), and
the subscription goes on serving.

NATS's own failures stop here too: a timeout, a lost connection or a JetStream that is not available (yet)
become `StateUnavailable` / `EventsUnavailable`, temporary errors the core knows how to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from training_controller.config import NatsSettings
from training_controller.core.errors import (
    ControllerError,
    EventsUnavailable,
    StateUnavailable,
    TemporaryError,
)
from training_controller.messages import ErrorReply, PayloadError, decode, encode

log = logging.getLogger(__name__)

Reply = BaseModel | dict[str, Any] | list[Any] | str | bytes | None
Handler = Callable[[Any, Msg], Awaitable[Reply]]

# What nats-py raises when the server is away, paused, restarting or its JetStream not ready: all pass.
NATS_TEMPORARY: tuple[type[BaseException], ...] = (
    TimeoutError,  # nats.errors.TimeoutError and asyncio's are both this on Python 3.11
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    nats.js.errors.NoStreamResponseError,
    ConnectionError,
)
# The train stream's consumer: how long a delivered message may stay unacked, and how often a message whose
# handling keeps failing (not for a temporary reason) is tried before it is given up, loudly.
ACK_WAIT_SECONDS = 30.0
MAX_DELIVER = 50
# Every this many idle seconds the consumer checks that its durable consumer still exists.
CONSUMER_CHECK_SECONDS = 30.0
# Requests of concurrent routes in progress at once, over all routes; more wait (backpressure).
MAX_CONCURRENT_REQUESTS = 256


@contextlib.contextmanager
def translated(error: type[TemporaryError], what: str) -> Iterator[None]:
    """Turn NATS's temporary failures inside the block into `error` (StateUnavailable, EventsUnavailable)."""
    try:
        yield
    except NATS_TEMPORARY as e:
        raise unanswered(error, what, e) from e


def unanswered(error: type[TemporaryError], what: str, cause: Exception) -> TemporaryError:
    """The TemporaryError for a NATS call that failed for a reason that passes (see `translated`)."""
    return error(f"{what}: NATS did not answer ({type(cause).__name__}: {cause})", delay=0.5)


@dataclass(frozen=True)
class Route:
    """One subject the service answers."""

    subject: str
    handler: Handler
    model: type[BaseModel] | None = None  # None: the handler takes the raw bytes
    queue: str = ""
    requests_only: bool = False  # ignore plain publishes (another path, such as a stream, takes them)
    # Handlers that wait on I/O run concurrently, up to the bus's bound; the others, answered from memory,
    # run in order on the subscription's own task (cheaper than a task each, and order-keeping).
    concurrent: bool = False


class Bus:
    """A NATS connection with the service's conventions."""

    def __init__(self, nc: Client, settings: NatsSettings) -> None:
        self.nc = nc
        self.settings = settings
        self.js = nc.jetstream(timeout=settings.request_timeout_seconds)
        self._subscriptions: list[Any] = []
        # Called with (subject, seconds) after each request is answered; the service hangs its metrics here.
        self.observe: Callable[[str, float], None] = lambda subject, seconds: None
        self.reconnects = 0
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._in_flight: set[asyncio.Task] = set()

    @classmethod
    async def connect(cls, settings: NatsSettings, *, name: str = "training-controller") -> Bus:
        holder: list[Bus] = []
        outage = {"since": 0.0, "errors": 0}  # one warning per outage, not one per reconnect attempt

        async def on_error(e: Exception) -> None:
            outage["errors"] += 1
            if outage["errors"] == 1:
                log.warning("NATS connection problem: %s", e)
            else:
                log.debug("NATS connection problem: %s", e)

        async def on_disconnect() -> None:
            outage["since"] = time.monotonic()
            log.warning("disconnected from NATS; reconnecting")

        async def on_reconnect() -> None:
            away = time.monotonic() - outage["since"] if outage["since"] else 0.0
            log.info("reconnected to NATS after %.1fs (%d connection errors)", away, outage["errors"])
            outage["since"], outage["errors"] = 0.0, 0
            if holder:
                holder[0].reconnects += 1

        nc = await nats.connect(
            servers=[settings.url],
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        bus = cls(nc, settings)
        holder.append(bus)
        return bus

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    async def serve(self, route: Route) -> None:
        """Subscribe a route's handler to its subject."""

        async def answer(msg: Msg) -> None:
            started = time.perf_counter()
            reply = await self._handle(route, msg)
            if msg.reply and reply is not None:
                try:
                    await self.nc.publish(msg.reply, encode(reply))
                except NATS_TEMPORARY as e:  # the requester times out and may ask again; nothing to undo
                    log.warning("could not answer a %s request: %s", route.subject, e)
                self.observe(route.subject, time.perf_counter() - started)

        async def on_message(msg: Msg) -> None:
            if route.requests_only and not msg.reply:
                return
            if not route.concurrent:
                await answer(msg)
                return
            await self._slots.acquire()
            task = asyncio.create_task(answer(msg), name=f"request-{route.subject}")
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

        sub = await self.nc.subscribe(route.subject, queue=route.queue, cb=on_message)
        self._subscriptions.append(sub)

    def _finished(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:  # _handle answers every error; this is a bug
            log.error("answering a request failed", exc_info=task.exception())

    async def _handle(self, route: Route, msg: Msg) -> Reply:
        try:
            payload = decode(route.model, msg.data) if route.model is not None else msg.data
            return await route.handler(payload, msg)
        except PayloadError as e:
            log.warning("rejected %s request: %s", route.subject, _clip(str(e), 500))
            return ErrorReply(error=_clip(f"invalid {route.subject} request: {e}"))
        except ControllerError as e:
            log.warning("%s request failed: %s", route.subject, _clip(str(e), 500))
            return ErrorReply(error=_clip(str(e)))
        except Exception as e:  # a requester always gets an answer, and the subscription lives on
            log.exception("%s handler crashed", route.subject)
            return ErrorReply(error=f"internal error while serving {route.subject}: {type(e).__name__}")

    async def publish(
        self, subject: str, payload: BaseModel | dict[str, Any] | str | bytes, *, headers: dict[str, str] | None = None
    ) -> None:
        """Hand a message to NATS (buffered by the client while it reconnects); raises EventsUnavailable."""
        try:  # as `translated` does, written out: this runs per forwarded gpu_service_inference request
            await self.nc.publish(subject, encode(payload), headers=headers)
        except NATS_TEMPORARY as e:
            raise unanswered(EventsUnavailable, f"publishing on {subject}", e) from e

    async def ensure_stream(self, name: str, subjects: list[str]) -> None:
        """A JetStream stream capturing `subjects`, created if missing.

        `no_ack` keeps JetStream from answering a request on a captured subject with its own PubAck, so that a
        requester gets the service's reply and nothing else.
        """
        try:
            await self.js.stream_info(name)
        except NotFoundError:
            await self.js.add_stream(
                StreamConfig(name=name, subjects=subjects, no_ack=True, duplicate_window=120.0, max_age=7 * 86_400.0)
            )

    async def ensure_consumer(self, stream: str, subject: str, durable: str) -> None:
        """The stream's durable pull consumer, created if missing, so that it exists once start-up is done."""
        try:
            await self.js.consumer_info(stream, durable)
        except NotFoundError:
            await self.js.add_consumer(stream, self._consumer_config(durable, subject))

    @staticmethod
    def _consumer_config(durable: str, subject: str) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=durable, filter_subject=subject, ack_wait=ACK_WAIT_SECONDS, max_deliver=MAX_DELIVER,
            ack_policy=AckPolicy.EXPLICIT,
        )

    async def consume(
        self, stream: str, subject: str, durable: str, handler: Callable[[Msg], Awaitable[None]], *, batch: int = 10
    ) -> None:
        """Deliver the stream's messages to `handler` through a durable pull consumer, until the connection
        is closed.

        Nothing that a fetch can raise ends the loop: a timeout (of either kind) is an idle stream; a lost
        connection is waited out; a consumer or stream that disappeared (a NATS server that restarted
        without its store, someone who deleted it) is created again. The handler acks; a message it neither
        acks nor terms is delivered again after the ack wait, also to a restarted controller.
        """
        config = self._consumer_config(durable, subject)
        sub = None
        last_check = time.monotonic()
        failures = 0
        while not self.nc.is_closed:
            try:
                if sub is None:
                    await self.ensure_stream(stream, [subject])
                    sub = await self.js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
                    log.info("consuming stream %s with durable consumer %s", stream, durable)
                    last_check = time.monotonic()
                messages = await sub.fetch(batch, timeout=self.settings.fetch_timeout_seconds)
                failures = 0
            except TimeoutError:
                # An idle stream. Now and then make sure the durable consumer is still there to pull from.
                if time.monotonic() - last_check >= CONSUMER_CHECK_SECONDS and sub is not None:
                    last_check = time.monotonic()
                    sub = await self._check_consumer(sub, stream, durable)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as e:  # whatever it is, log it and pull again after a pause
                if self.nc.is_closed:
                    return
                failures += 1
                wait = min(10.0, 0.5 * 2 ** min(failures, 5))
                log.warning("pulling from stream %s failed (%s: %s); again in %.1fs", stream, type(e).__name__, e, wait)
                if isinstance(e, NotFoundError | nats.js.errors.BadRequestError):
                    sub = await self._drop(sub)
                await asyncio.sleep(wait)
                continue
            for msg in messages:
                await self._deliver(stream, handler, msg)

    async def _check_consumer(self, sub: Any, stream: str, durable: str) -> Any:
        try:
            await self.js.consumer_info(stream, durable)
        except NotFoundError:
            log.warning("the durable consumer %s of stream %s is gone; creating it again", durable, stream)
            return await self._drop(sub)
        except NATS_TEMPORARY as e:
            log.debug("could not check consumer %s: %s", durable, e)
        return sub

    async def _drop(self, sub: Any) -> None:
        if sub is not None:
            with contextlib.suppress(Exception):  # the subscription is being replaced; its end is no news
                await sub.unsubscribe()
        return None

    async def _deliver(self, stream: str, handler: Callable[[Msg], Awaitable[None]], msg: Msg) -> None:
        try:
            await handler(msg)
        except TemporaryError as e:
            log.warning("message #%s of stream %s could not be handled now (%s); it comes back", _seq(msg), stream, e)
            with contextlib.suppress(*NATS_TEMPORARY, nats.errors.MsgAlreadyAckdError):
                await msg.nak(delay=2.0)
        except Exception:
            delivered = msg.metadata.num_delivered if msg.metadata else 0
            if delivered >= MAX_DELIVER:
                log.exception(
                    "giving up on message #%s of stream %s after %d deliveries: %s",
                    _seq(msg), stream, delivered, _clip(msg.data.decode(errors="replace"), 500),
                )
                with contextlib.suppress(*NATS_TEMPORARY, nats.errors.MsgAlreadyAckdError):
                    await msg.term()
            else:  # the message stays unacked and comes back after the ack wait
                log.exception("handling message #%s of stream %s failed; it will be delivered again", _seq(msg), stream)

    async def key_value(self, bucket: str, *, description: str) -> KeyValue:
        """A JetStream key-value bucket: the existing one, or one created exactly as nats.go would.

        Opni's gateway creates its buckets with nats.go's `CreateKeyValue` at start-up and exits if that
        fails; nats-py's `create_key_value` makes a stream that differs (it sets `allow_msg_ttl` and leaves
        `allow_direct` out), which the server then refuses to call the same (error 10058). So the stream
        is created here with the fields nats.go sends, and whichever of the two starts first, the other
        finds the bucket it expects.
        """
        try:
            return await self.js.key_value(bucket)
        except BucketNotFoundError:
            pass
        config = StreamConfig(
            name=f"KV_{bucket}",
            description=description,
            subjects=[f"$KV.{bucket}.>"],
            retention=RetentionPolicy.LIMITS,
            max_consumers=-1,
            max_msgs=-1,
            max_bytes=-1,
            discard=DiscardPolicy.NEW,
            max_age=0,
            max_msgs_per_subject=1,
            max_msg_size=-1,
            storage=StorageType.FILE,
            num_replicas=1,
            duplicate_window=120.0,
            deny_delete=True,
            allow_rollup_hdrs=True,
            allow_direct=True,
            mirror_direct=False,
        )
        await self.js.add_stream(config)  # the same config twice is no error, whoever created it first
        log.info("created KV bucket %s", bucket)
        return await self.js.key_value(bucket)

    async def close(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):  # closing anyway; the connection goes next
                await sub.unsubscribe()
        if not self.nc.is_closed:
            # close, not drain: the handlers are done by now, and draining a pull subscription waits out
            # the drain timeout.
            await self.nc.close()


def _seq(msg: Msg) -> int | str:
    try:
        return msg.metadata.sequence.stream
    except Exception:  # a message without JetStream metadata; only used for logging
        return "?"


MAX_ERROR_CHARS = 4_000


def _clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error text short enough for any reply, however large the request that caused it."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["Bus", "NATS_TEMPORARY", "Route", "StateUnavailable", "translated"]
