"""The REST API (/api/v1) and the web console (/), mounted on the controller's HTTP surface.

The API calls the controller's use cases and nothing behind them; its errors are RFC 9457 problem details
(`problems`), every /api route and the console's data need a bearer token (`auth`), a training's events
are Server-Sent Events read from a JetStream stream of the API's own (`events`), predictions are forwarded
to the inference worker over NATS (`inference`), and the OpenAPI document is generated from the same route
table and models (`openapi`). The console is static HTML, CSS and JavaScript (`training_controller/console`)
that uses only this API: its files hold no data, so they are served to anyone, and everything they show is
fetched with the token the person signs in with.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from importlib import resources
from typing import Any

from aiohttp import web

from training_controller.api.auth import Authenticator
from training_controller.api.events import TrainingEvents
from training_controller.api.inference import EmbeddedWorker, InferenceClient
from training_controller.api.problems import is_api, problems_middleware
from training_controller.api.routes import OPERATIONS, TOKEN, Routes
from training_controller.bus import Bus
from training_controller.config import Settings
from training_controller.core.controller import TrainingController

log = logging.getLogger(__name__)

CONSOLE_FILES = ("index.html", "console.css", "console.js")
# The console loads nothing from elsewhere and may not be framed.
CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}


class Api:
    """The REST API and the console of one controller."""

    def __init__(self, controller: TrainingController, bus: Bus, settings: Settings, *,
                 worker: EmbeddedWorker | None = None) -> None:
        from training_controller.api.openapi import document

        http = settings.http
        self.max_body_bytes = http.api_max_body_bytes
        self.auth = Authenticator(http.tokens())
        self.events = TrainingEvents(bus, max_age_seconds=http.api_events_max_age_seconds)
        self.worker = worker
        self._stopping = asyncio.Event()
        self.routes = Routes(
            controller,
            events=self.events,
            inference=InferenceClient(bus, timeout=http.predict_timeout_seconds, worker=worker),
            lookback_seconds=settings.training.workload_lookback_seconds,
            openapi_spec=functools.cache(document),
            stopping=self._stopping,
        )
        self._operations = {(op.method, op.url): op for op in OPERATIONS}

    async def start(self) -> None:
        """Make the events stream (a failure is logged, and tried again at the first /events request)."""
        await self.events.ensure()

    def mount(self, app: web.Application) -> None:
        app.middlewares.append(problems_middleware(max_body_bytes=self.max_body_bytes))
        app.middlewares.append(self._authenticate)
        for op in OPERATIONS:
            app.router.add_route(op.method, op.url, getattr(self.routes, op.name), name=op.name)
        app.router.add_get("/", self._console_file)
        app.router.add_get("/console/{name}", self._console_file)
        app.on_shutdown.append(self._shutdown)

    async def _shutdown(self, app: web.Application) -> None:
        self._stopping.set()  # event streams end within a second, so the server stops without waiting

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not is_api(request):
            return await handler(request)
        token = self.auth.identify(request.headers.get("Authorization"))
        route = request.match_info.route.resource
        op = self._operations.get((request.method, route.canonical)) if route is not None else None
        if op is not None and op.write:
            self.auth.require_write(token, f"{op.method} {op.url}")
        request[TOKEN] = token
        return await handler(request)

    async def _console_file(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        if name not in CONSOLE_FILES:
            raise web.HTTPNotFound()
        body = resources.files("training_controller.console").joinpath(name).read_bytes()
        suffix = name[name.rindex("."):]
        return web.Response(body=body, content_type=CONTENT_TYPES[suffix], charset="utf-8", headers=CONSOLE_HEADERS)


__all__ = ["Api", "EmbeddedWorker"]
