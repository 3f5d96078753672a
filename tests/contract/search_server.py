"""A local HTTP server that speaks the Elasticsearch 9 or the OpenSearch wire format, for contract tests.

No real cluster can be installed here, so the adapters are tested against this: the endpoints they use
(`/`, `_count`, point in time open/close, `_search` with `pit` + `search_after`), with response bodies and
headers shaped as the real servers send them (`X-Elastic-Product: Elasticsearch` and the versioned media
type for Elasticsearch; no product header on 401/403, as Elasticsearch does; `_shard_doc` refused by
OpenSearch before 3.3). It evaluates the exact-value query DSL the adapters send, refuses anything else, and
records every request so tests can assert bodies and headers. Faults (a 503 once, a 429, a 401) are queued
per endpoint.

The documents and the evaluation of queries are `search_corpus.py`.

Run alone (for a measurement in another process): `python -m tests.contract.search_server --documents N`;
it prints `PORT <n>` and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import re
import socket
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.contract.search_corpus import Corpus, Mapping, QueryError, SyntheticCorpus

ES_MEDIA_TYPE = "application/vnd.elasticsearch+json;compatible-with=9"
OS_MEDIA_TYPE = "application/json; charset=UTF-8"
SHARDS = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}


@dataclass
class Recorded:
    """One request as the server saw it."""

    kind: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Fault:
    kind: str
    status: int
    times: int


_ERROR_TYPES = {
    400: ("parsing_exception", "bad request"),
    401: ("security_exception", "unable to authenticate user for REST request"),
    403: ("security_exception", "action is unauthorized for user"),
    404: ("index_not_found_exception", "no such index [logs]"),
    429: ("es_rejected_execution_exception", "rejected execution of coordinating operation"),
    500: ("exception", "internal server error"),
    502: ("exception", "bad gateway"),
    503: ("no_shard_available_action_exception", "all shards failed"),
}


@dataclass
class SearchServer:
    """The fake cluster; `flavor` is "elasticsearch" or "opensearch"."""

    corpus: Corpus
    flavor: str = "elasticsearch"
    index: str = "logs"
    version: str = ""
    basic_auth: tuple[str, str] | None = None
    api_key: str | None = None
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    open_pits: dict[str, str] = field(default_factory=dict)  # every id handed out -> the PIT it names
    closed_pits: list[str] = field(default_factory=list)
    record: bool = True
    url: str = ""

    def __post_init__(self) -> None:
        self.version = self.version or ("9.1.0" if self.flavor == "elasticsearch" else "2.19.1")
        self._pit_seq = itertools.count(1)
        self._runner: web.AppRunner | None = None

    # --- test helpers ---

    def fail(self, kind: str, status: int, times: int = 1) -> None:
        """Answer the next `times` requests of this kind (count, open_pit, search, close_pit, info) with status."""
        self.faults.append(Fault(kind, status, times))

    def of(self, kind: str) -> list[Recorded]:
        return [r for r in self.requests if r.kind == kind]

    @property
    def live_pits(self) -> set[str]:
        return set(self.open_pits.values())

    # --- HTTP ---

    def _headers(self, status: int) -> dict[str, str]:
        if self.flavor == "elasticsearch":
            headers = {"Content-Type": ES_MEDIA_TYPE}
            if status not in (401, 403):  # Elasticsearch leaves the product header off these two
                headers["X-Elastic-Product"] = "Elasticsearch"
            return headers
        return {"Content-Type": OS_MEDIA_TYPE}

    def _json(self, status: int, body: Any, extra: dict[str, str] | None = None) -> web.Response:
        headers = self._headers(status) | (extra or {})
        return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)

    def _error(self, status: int, kind: str | None = None, reason: str | None = None) -> web.Response:
        default_kind, default_reason = _ERROR_TYPES.get(status, ("exception", "error"))
        kind, reason = kind or default_kind, reason or default_reason
        cause = {"type": kind, "reason": reason}
        extra = {}
        if status == 401:
            extra["WWW-Authenticate"] = 'Basic realm="security" charset="UTF-8", ApiKey'
        return self._json(status, {"error": {"root_cause": [cause], **cause}, "status": status}, extra)

    def _route(self, method: str, path: str) -> tuple[str, str | None]:
        es = self.flavor == "elasticsearch"
        parts = [p for p in path.split("/") if p]
        if not parts:
            return "info", None
        if parts == ["_search"]:
            return "search", None
        if es and parts == ["_pit"] and method == "DELETE":
            return "close_pit", None
        if not es and parts == ["_search", "point_in_time"] and method == "DELETE":
            return "close_pit", None
        if len(parts) == 2 and parts[1] == "_count":
            return "count", parts[0]
        if es and len(parts) == 2 and parts[1] == "_pit" and method == "POST":
            return "open_pit", parts[0]
        if not es and parts[1:] == ["_search", "point_in_time"] and method == "POST":
            return "open_pit", parts[0]
        if len(parts) == 2 and parts[1] == "_search":
            return "index_search", parts[0]
        return "unknown", None

    def _authorized(self, headers: dict[str, str]) -> bool:
        given = headers.get("authorization", "")
        if self.basic_auth is not None:
            token = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            if given == f"Basic {token}":
                return True
        if self.api_key is not None and given == f"ApiKey {self.api_key}":
            return True
        return self.basic_auth is None and self.api_key is None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._error(
                400,
                "not_x_content_exception",
                "Compressor detection can only be called on some xcontent bytes",
            )
        kind, index = self._route(request.method, request.path)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if self.record:
            self.requests.append(
                Recorded(kind, request.method, request.path, dict(request.query), headers, body)
            )
        if self.flavor == "elasticsearch":
            accept = headers.get("accept", "application/json")
            version = re.search(r"compatible-with=(\d+)", accept)
            if version and version[1] not in ("8", "9"):
                return self._error(
                    400,
                    "media_type_header_exception",
                    f"Accept version must be either version 8 or 9, but found {version[1]}",
                )
        if not self._authorized(headers):
            reason = f"missing authentication credentials for REST request [{request.path}]"
            if "authorization" in headers:
                reason = f"unable to authenticate user for REST request [{request.path}]"
            return self._error(401, "security_exception", reason)
        for fault in self.faults:
            if fault.kind == kind and fault.times > 0:
                fault.times -= 1
                return self._error(fault.status)
        try:
            return await self._answer(kind, index, request, body)
        except QueryError as e:
            return self._error(400, e.kind, e.reason)

    async def _answer(
        self, kind: str, index: str | None, request: web.Request, body: Any
    ) -> web.StreamResponse:
        es = self.flavor == "elasticsearch"
        if kind == "info":
            if request.method == "HEAD":
                return web.Response(status=200, headers=self._headers(200))
            return self._json(200, self._info())
        if index is not None and index != self.index:
            return self._error(404, "index_not_found_exception", f"no such index [{index}]")
        if kind == "count":
            query = (body or {}).get("query", {"match_all": {}})
            return self._json(200, {"count": self.corpus.count(query), "_shards": SHARDS})
        if kind == "open_pit":
            keep_alive = request.query.get("keep_alive")
            if not keep_alive:
                return self._error(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: [keep_alive] is not specified;",
                )
            pit = f"pit{next(self._pit_seq)}"
            pit_id = base64.b64encode(f"{pit}:0".encode()).decode()
            self.open_pits[pit_id] = pit
            if es:
                return self._json(200, {"id": pit_id, "_shards": SHARDS})
            return self._json(200, {"pit_id": pit_id, "_shards": SHARDS, "creation_time": 1658146050064})
        if kind == "index_search":
            if body and "pit" in body:
                return self._error(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: [indices] cannot be used with point in time;",
                )
            return self._error(400, "illegal_argument_exception", "only point-in-time searches are served")
        if kind == "search":
            return self._search(body or {})
        if kind == "close_pit":
            ids = [body.get("id")] if es else list(body.get("pit_id", []))
            freed = []
            for pit_id in ids:
                pit = self.open_pits.get(pit_id)
                if pit is not None and pit not in self.closed_pits:
                    self.closed_pits.append(pit)
                    freed.append(pit_id)
            if es:
                return self._json(200, {"succeeded": True, "num_freed": len(freed)})
            return self._json(200, {"pits": [{"successful": i in freed, "pit_id": i} for i in ids]})
        return self._error(
            400, "illegal_argument_exception", f"unexpected request [{request.method} {request.path}]"
        )

    def _info(self) -> dict[str, Any]:
        if self.flavor == "elasticsearch":
            return {
                "name": "fake-node-1",
                "cluster_name": "fake",
                "cluster_uuid": "kq2Jg2pWQ3ahNS0H5xGZ-w",
                "version": {
                    "number": self.version,
                    "build_flavor": "default",
                    "build_type": "docker",
                    "lucene_version": "10.2.2",
                    "minimum_wire_compatibility_version": "8.19.0",
                    "minimum_index_compatibility_version": "8.0.0",
                },
                "tagline": "You Know, for Search",
            }
        return {
            "name": "fake-node-1",
            "cluster_name": "fake",
            "cluster_uuid": "kq2Jg2pWQ3ahNS0H5xGZ-w",
            "version": {
                "distribution": "opensearch",
                "number": self.version,
                "build_type": "tar",
                "lucene_version": "9.12.1",
                "minimum_wire_compatibility_version": "7.10.0",
                "minimum_index_compatibility_version": "7.0.0",
            },
            "tagline": "The OpenSearch Project: https://opensearch.org/",
        }

    def _search(self, body: dict[str, Any]) -> web.Response:
        pit = body.get("pit")
        if not pit:
            return self._error(400, "illegal_argument_exception", "only point-in-time searches are served")
        name = self.open_pits.get(pit.get("id", ""))
        if name is None or name in self.closed_pits:
            return self._error(404, "search_context_missing_exception", "No search context found for id")
        sort = body.get("sort", [])
        fields = [next(iter(s)) if isinstance(s, dict) else s for s in sort]
        mapping: Mapping = self.corpus.mapping  # type: ignore[attr-defined]
        if len(fields) != 2 or fields[0] != mapping.timestamp_field:
            return self._error(400, "illegal_argument_exception", f"unexpected sort {sort}")
        tiebreak = fields[1]
        shard_doc_ok = self.flavor == "elasticsearch" or tuple(map(int, self.version.split(".")[:2])) >= (
            3,
            3,
        )
        if tiebreak == "_shard_doc" and not shard_doc_ok:
            return self._error(
                400, "query_shard_exception", "No mapping found for [_shard_doc] in order to sort on"
            )
        if tiebreak not in ("_shard_doc", "_doc"):
            return self._error(400, "illegal_argument_exception", f"unexpected tiebreaker [{tiebreak}]")
        after = body.get("search_after")
        size = int(body.get("size", 10))
        hits = self.corpus.page(body.get("query", {"match_all": {}}), tuple(after) if after else None, size)
        # A new id for the same PIT on every page: the client must send (and close) the newest one.
        new_id = base64.b64encode(f"{name}:{len(self.requests)}".encode()).decode()
        self.open_pits[new_id] = name
        return self._json(
            200,
            {
                "pit_id": new_id,
                "took": 1,
                "timed_out": False,
                "_shards": SHARDS,
                "hits": {
                    "max_score": None,
                    "hits": [
                        {
                            "_index": self.index,
                            "_id": _id,
                            "_score": None,
                            "_source": doc,
                            "sort": sort_values,
                        }
                        for _id, doc, sort_values in hits
                    ],
                },
            },
        )

    async def start(self, *, ssl_context: ssl.SSLContext | None = None) -> str:
        """Listen on a free loopback port (HTTPS with the given context); returns the URL."""
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _serve(args: argparse.Namespace) -> None:
    corpus = SyntheticCorpus(args.documents, start_ns=args.start_ns, step_ns=args.step_ns)
    server = SearchServer(corpus, flavor=args.flavor, record=False)
    url = await server.start()
    print(f"PORT {url.rsplit(':', 1)[1]}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # serve until the parent closes our stdin
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavor", choices=("elasticsearch", "opensearch"), default="elasticsearch")
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--start-ns", type=int, default=1_617_037_200 * 10**9)
    parser.add_argument("--step-ns", type=int, default=1_000_000)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
