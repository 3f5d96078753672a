"""The fake Kubernetes API server, one per test of the cluster launchers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .kube_fixtures import NS
from .kube_server import FakeKubeServer


@pytest.fixture
def kube() -> Iterator[FakeKubeServer]:
    with FakeKubeServer(namespace=NS) as server:
        yield server
