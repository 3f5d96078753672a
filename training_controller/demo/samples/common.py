"""What the sample-log workloads share: time helpers, random names and addresses, pods and workloads."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

NS_PER_S = 1_000_000_000
NS_PER_US = 1_000
NS_PER_MINUTE = 60 * NS_PER_S
NS_PER_HOUR = 3600 * NS_PER_S
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Spelled out rather than strftime("%b") so that the output does not depend on the process locale.
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Alphabet of Kubernetes generated name suffixes (no vowels, no confusable digits).
K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

T = TypeVar("T")




def utc(ts_ns: int) -> datetime:
    seconds, rem = divmod(ts_ns, NS_PER_S)
    return EPOCH + timedelta(seconds=seconds, microseconds=rem // NS_PER_US)


def k8s_suffix(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(K8S_ALPHABET) for _ in range(n))


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def random_hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def private_ip(rng: random.Random, *, prefix: str = "10") -> str:
    return f"{prefix}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def client_ip(rng: random.Random) -> str:
    # Documentation ranges (RFC 5737) stand in for public clients.
    kind = rng.random()
    if kind < 0.4:
        return private_ip(rng)
    net = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
    return f"{net}.{rng.randint(1, 254)}"


def weighted(rng: random.Random, pairs: tuple[tuple[T, float], ...]) -> T:
    return rng.choices([v for v, _ in pairs], weights=[w for _, w in pairs])[0]


# Workloads. Each emitter takes the run's state, a pod and a timestamp, and returns (timestamp, line) pairs:
# one pair for an ordinary line, several (timestamps a few microseconds apart) for a stack trace.


@dataclass
class Pod:
    name: str
    pids: tuple[int, ...]
    counter: int = 0


@dataclass
class Workload:
    namespace: str
    deployment: str
    control_plane: bool
    weight: float
    pods: list[Pod]
    emit: Callable[[random.Random, Pod, int], list[tuple[int, str]]]
