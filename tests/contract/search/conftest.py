"""Fixtures of the search contract tests: the backend under test, and fake clusters of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.contract.search.backends import ELASTICSEARCH, OPENSEARCH, Backend, clusters


@pytest.fixture(params=[ELASTICSEARCH, OPENSEARCH], ids=lambda b: b.flavor)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture
async def cluster(backend: Backend) -> AsyncIterator[Callable[..., Any]]:
    """Start a fake cluster of the backend with some documents; returns (server, source-factory)."""
    async for start in clusters(backend):
        yield start


@pytest.fixture
async def elasticsearch() -> AsyncIterator[Callable[..., Any]]:
    async for start in clusters(ELASTICSEARCH):
        yield start


@pytest.fixture
async def opensearch() -> AsyncIterator[Callable[..., Any]]:
    async for start in clusters(OPENSEARCH):
        yield start
