"""A controller with its REST API on a real nats-server, and a client that speaks to it as a token holder."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.conftest import interval
from training_controller.bootstrap import Service

RW = "writer-token-0123456789abcdef"
RO = "reader-token-0123456789abcdef"
TOKENS = f"ops:rw:{RW},viewer:ro:{RO}"


def training(minutes_before_end: int = 30, length_minutes: int = 3, **extra: Any) -> dict[str, Any]:
    return {"modelType": "nulog", "time_intervals": [interval(minutes_before_end, length_minutes)], **extra}


@dataclass
class Reply:
    status: int
    headers: Any
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def problem(self) -> dict[str, Any]:
        assert self.headers["Content-Type"].startswith("application/problem+json"), (self.status, self.text)
        body = self.json
        assert body["status"] == self.status and body["type"] == "about:blank" and body["detail"], body
        return body


class Client:
    """HTTP requests to one controller, with a token (or none)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session = session
        self.base = base
        self.token = token

    def as_(self, token: str | None) -> Client:
        return Client(self.session, self.base, token)

    async def request(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Reply:
        all_headers = {**({"Authorization": f"Bearer {self.token}"} if self.token else {}), **(headers or {})}
        async with self.session.request(method, self.base + path, json=json_body, data=data, headers=all_headers) as r:
            return Reply(r.status, r.headers, await r.text())

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", path, json_body=body, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.request("DELETE", path, **kw)

    async def events(self, run_id: str, *, last_id: int | None = None, timeout: float = 120) -> list[dict[str, Any]]:
        """Every event of /trainings/{id}/events until the server ends the stream: {id, event, data}."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        events, block = [], []
        url = f"{self.base}/api/v1/trainings/{run_id}/events"
        async with self.session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            assert r.status == 200, await r.text()
            assert r.headers["Content-Type"] == "text/event-stream"
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line:
                    block.append(line)
                    continue
                fields: dict[str, str] = {}
                for item in block:
                    if not item.startswith(":"):
                        name, _, value = item.partition(": ")
                        fields[name] = value
                block = []
                if fields:
                    events.append({"id": int(fields["id"]) if "id" in fields else None, "event": fields.get("event"),
                                   "data": json.loads(fields["data"]) if "data" in fields else None})
        return events


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def client_of(service: Service, session: aiohttp.ClientSession, token: str | None = RW) -> Client:
    return Client(session, f"http://127.0.0.1:{service.http.port}", token)
