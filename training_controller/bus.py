"""The thin layer over nats-py: connect, serve subjects, publish, and JetStream key-value buckets.

A route names a subject, the pydantic model of its payload and a handler. The bus decodes and validates
each message, calls the handler, and replies when the message has a reply subject. Whatever goes wrong, a
requester gets an answer: an `ErrorReply` that says what (bad payload, unknown job, internal error), and
the subscription goes on serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from training_controller.core.errors import ControllerError
from training_controller.messages import ErrorReply, PayloadError, decode, encode

log = logging.getLogger(__name__)

Reply = BaseModel | dict[str, Any] | list[Any] | str | bytes | None
Handler = Callable[[Any, Msg], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    """One subject the service answers."""

    subject: str
    handler: Handler
    model: type[BaseModel] | None = None  # None: the handler takes the raw bytes
    queue: str = ""
    requests_only: bool = False  # ignore plain publishes (another path, such as a stream, takes them)


class Bus:
    """A NATS connection with the service's conventions."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self._subscriptions: list[Any] = []
        # Called with (subject, seconds) after each request is answered; the service hangs its metrics here.
        self.observe: Callable[[str, float], None] = lambda subject, seconds: None

    @classmethod
    async def connect(cls, url: str, *, name: str = "training-controller") -> Bus:
        async def on_error(e: Exception) -> None:
            log.warning("NATS connection problem: %s", e)

        async def on_disconnect() -> None:
            log.warning("disconnected from NATS; reconnecting")

        async def on_reconnect() -> None:
            log.info("reconnected to NATS")

        nc = await nats.connect(
            servers=[url],
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        return cls(nc)

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    async def serve(self, route: Route) -> None:
        """Subscribe a route's handler to its subject."""

        async def on_message(msg: Msg) -> None:
            if route.requests_only and not msg.reply:
                return
            started = time.perf_counter()
            reply = await self._handle(route, msg)
            if msg.reply and reply is not None:
                await self.nc.publish(msg.reply, encode(reply))
                self.observe(route.subject, time.perf_counter() - started)

        sub = await self.nc.subscribe(route.subject, queue=route.queue, cb=on_message)
        self._subscriptions.append(sub)

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
        await self.nc.publish(subject, encode(payload), headers=headers)

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

    async def consume(
        self, stream: str, subject: str, durable: str, handler: Callable[[Msg], Awaitable[None]], *, batch: int = 10
    ) -> None:
        """Deliver the stream's messages to `handler` through a durable pull consumer, forever.

        The handler acks; a message it neither acks nor terms is delivered again after the ack wait, also to a
        restarted controller.
        """
        # A message whose handling keeps failing is dropped after a few tries rather than retried forever.
        config = ConsumerConfig(ack_wait=30.0, max_deliver=5)
        sub = await self.js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
        self._subscriptions.append(sub)
        while True:
            try:
                messages = await sub.fetch(batch, timeout=5)
            except nats.errors.TimeoutError:
                continue
            except nats.errors.ConnectionClosedError:
                return
            for msg in messages:
                try:
                    await handler(msg)
                except Exception:  # the message stays unacked and comes back; the consumer goes on
                    log.exception("handling a message of stream %s failed; it will be delivered again", stream)

    async def key_value(self, bucket: str, *, history: int = 1) -> KeyValue:
        """A JetStream key-value bucket, created if missing."""
        try:
            return await self.js.key_value(bucket)
        except BucketNotFoundError:
            return await self.js.create_key_value(bucket=bucket, history=history)

    async def close(self) -> None:
        for sub in self._subscriptions:
            try:
                await sub.unsubscribe()
            except Exception:  # closing anyway
                pass
        if not self.nc.is_closed:
            # close, not drain: the handlers are done by now, and draining a pull subscription waits out
            # the drain timeout.
            await self.nc.close()


MAX_ERROR_CHARS = 4_000


def _clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error text short enough for any reply, however large the request that caused it."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
