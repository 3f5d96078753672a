"""Contract tests of both search log sources against a local server that speaks each wire format
(`search_server.py`), once per backend (the `backend` fixture): credentials, TLS, retries, and failures
as errors that say whether to retry."""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.contract.search.backends import collect
from tests.contract.search_corpus import make_docs, window
from tests.contract.tls import self_signed_certificate, server_tls
from training_controller.core.errors import PermanentError, SourceRejected, SourceUnavailable
from training_controller.core.queries import LogQuery

# --- authentication and TLS ----------------------------------------------------------------------------


async def test_basic_auth_sends_the_authorization_header(cluster) -> None:
    server, source = await cluster(make_docs(3), basic_auth=("elastic", "s3cret"))

    src = source(username="elastic", password=SecretStr("s3cret"))
    assert await src.count(LogQuery(intervals=(window(0, 9),))) == 3

    expected = "Basic " + base64.b64encode(b"elastic:s3cret").decode()
    assert server.of("count")[0].headers["authorization"] == expected


def test_credentials_are_basic_auth_or_an_api_key_never_half_of_one(backend) -> None:
    with pytest.raises(ValueError, match="not both"):
        backend.source("http://es:9200", username="elastic", password="x", api_key="k")
    with pytest.raises(ValueError, match="both a username and a password"):
        backend.source("http://es:9200", username="elastic")


@pytest.mark.parametrize("key", ["a2V5aWQ6c2VjcmV0", SecretStr("a2V5aWQ6c2VjcmV0")], ids=["str", "SecretStr"])
async def test_api_key_sends_the_apikey_header(cluster, key: str | SecretStr) -> None:
    server, source = await cluster(make_docs(3), api_key="a2V5aWQ6c2VjcmV0")
    batches = await collect(source(api_key=key), LogQuery(intervals=(window(0, 9),)))

    assert sum(map(len, batches)) == 3
    assert {r.headers["authorization"] for r in server.requests} == {"ApiKey a2V5aWQ6c2VjcmV0"}


async def test_wrong_password_becomes_a_permanent_error_that_names_the_cause_not_the_password(
    cluster, backend
) -> None:
    server, source = await cluster(make_docs(3), basic_auth=("elastic", "right"))

    with pytest.raises(PermanentError) as info:
        await source(username="elastic", password="wr0ng-pa55").count(LogQuery(intervals=(window(0, 9),)))

    message = str(info.value)
    assert f"{backend.name} refused count (401)" in message and "security_exception" in message
    assert "wr0ng-pa55" not in message
    assert len(server.of("count")) == 1  # a 401 is not retried


async def test_tls_is_verified_against_the_ca_file_unless_turned_off_by_name(cluster, tmp_path: Path) -> None:
    pair = self_signed_certificate(tmp_path)
    if pair is None:
        pytest.skip("the openssl tool is not installed")
    _, source = await cluster(make_docs(3), tls=server_tls(*pair))
    query = LogQuery(intervals=(window(0, 9),))

    with pytest.raises(SourceRejected, match="TLS failed"):  # verification is on by default
        await source(max_tries=1).count(query)
    assert await source(ca_certs=str(pair[0])).count(query) == 3
    assert await source(verify_certs=False).count(query) == 3


# --- retries ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429, 502])
async def test_a_passing_failure_is_retried_then_succeeds(cluster, status: int) -> None:
    server, source = await cluster(make_docs(5))
    server.fail("count", status)
    server.fail("search", status)

    src = source(page_size=10)
    query = LogQuery(intervals=(window(0, 9),))
    assert await src.count(query) == 5
    assert sum(map(len, await collect(src, query))) == 5

    assert len(server.of("count")) == 2 and len(server.of("search")) == 2


async def test_backoff_grows_exponentially(cluster) -> None:
    server, source = await cluster(make_docs(5))
    server.fail("count", 503, times=3)

    started = time.monotonic()
    assert await source(retry_base_delay=0.05).count(LogQuery(intervals=(window(0, 9),))) == 5

    assert time.monotonic() - started >= 0.05 + 0.1 + 0.2
    assert len(server.of("count")) == 4


async def test_an_unreachable_cluster_becomes_source_unavailable_without_the_password(cluster, backend) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, source = await cluster([])
    src = source(endpoint=f"http://elastic:hunter2@127.0.0.1:{port}", max_tries=2)

    with pytest.raises(SourceUnavailable) as info:
        await src.count(LogQuery(intervals=(window(0, 9),)))

    message = str(info.value)
    assert message.startswith(f"{backend.name} at http://127.0.0.1:{port}: count failed after 2 tries (no answer)")
    assert "hunter2" not in message
    assert await src.ping() is False


async def test_ping_is_true_when_the_cluster_answers(cluster, backend) -> None:
    server, source = await cluster(make_docs(1))

    assert await source().ping() is True
    assert server.of("info")[0].method == backend.ping_method
