"""One training across several processes: the rendezvous, the few collectives training needs, and knowing
which peer is gone when one is.

The job reads the variables `torchrun` sets (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR`,
`MASTER_PORT`; on a Kubernetes Indexed Job the rank is `JOB_COMPLETION_INDEX`), so `torchrun
--nproc-per-node N -m nulog.job ...` and N plain processes with those variables are the same training.
Rank 0 hosts the rendezvous store (under torchrun, the agent does). gloo runs the collectives on CPU, NCCL on
CUDA.

A peer can end in two ways that a collective alone handles badly: gloo reports a peer whose process ended at
the next collective, with a socket error that does not say which rank it was, and NCCL waits until its
timeout. So every rank beats a counter in the store every `HEARTBEAT_S` and watches the others': a peer
whose counter stays still for `peer_timeout_s`, or a store that stops answering (rank 0 hosts it), makes this
rank fail at once, naming the rank, even while it waits inside a collective. A rank that fails on its own
says why in the store first, so its peers can repeat it. The collectives' own timeout is only a backstop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch

from nulog.protocol import (
    COMPLETION_INDEX_VAR,
    DEFAULT_MASTER_PORT,
    LOCAL_RANK_VAR,
    MASTER_ADDR_VAR,
    MASTER_PORT_VAR,
    RANK_VAR,
    WORLD_SIZE_VAR,
)

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.5
# A peer that has not beaten for this long, once a collective has failed, is the one that is gone.
SILENT_AFTER_FAILURE_S = 2.0
EXPLAIN_WAIT_S = 5.0
# Collectives wait at most this long. Dead and silent peers are found by the heartbeat in peer_timeout_s; this
# bounds what is left, a peer that beats but never reaches the collective (rank 0 writing a large model to a
# slow object store while the others wait for it at the end).
COLLECTIVE_TIMEOUT_S = 1800.0
# torchrun's agent hosts the store and tells its workers so with this variable; then rank 0 is a client too.
AGENT_STORE_VAR = "TORCHELASTIC_USE_AGENT_STORE"
_KEY = "nulog"


class RendezvousError(ValueError):
    """The rendezvous variables are missing or wrong; the message names them."""


class PeerLost(RuntimeError):
    """Another rank failed or went silent; the message says which one when that can be known."""


class RanksDisagree(RuntimeError):
    """The ranks do not train the same thing (different data, configuration or checkpoint)."""


@dataclass(frozen=True)
class Rendezvous:
    """Where this process stands among the workers of one training, as the environment says."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT
    agent_store: bool = False  # under torchrun: its agent hosts the store, rank 0 connects to it

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Rendezvous:
        """Read the variables torchrun sets; RANK falls back on JOB_COMPLETION_INDEX, LOCAL_RANK on 0."""
        env = os.environ if env is None else env

        def integer(name: str) -> int | None:
            value = env.get(name, "").strip()
            if not value:
                return None
            try:
                return int(value)
            except ValueError:
                raise RendezvousError(f"{name} must be an integer, not {value!r}") from None

        world = integer(WORLD_SIZE_VAR)
        world = 1 if world is None else world
        if world < 1:
            raise RendezvousError(f"{WORLD_SIZE_VAR} must be at least 1, not {world}")
        rank = integer(RANK_VAR)
        if rank is None:
            rank = integer(COMPLETION_INDEX_VAR)
        if rank is None:
            if world > 1:
                raise RendezvousError(f"{WORLD_SIZE_VAR} is {world} but neither {RANK_VAR} nor {COMPLETION_INDEX_VAR} is set")
            rank = 0
        if not 0 <= rank < world:
            raise RendezvousError(f"the rank {rank} is not within {WORLD_SIZE_VAR} {world} (0 to {world - 1})")
        local_rank = integer(LOCAL_RANK_VAR)
        local_rank = 0 if local_rank is None else local_rank
        if local_rank < 0:
            raise RendezvousError(f"{LOCAL_RANK_VAR} must not be negative, not {local_rank}")
        addr = env.get(MASTER_ADDR_VAR, "").strip()
        if world > 1 and not addr:
            raise RendezvousError(f"{WORLD_SIZE_VAR} is {world} but {MASTER_ADDR_VAR} is not set")
        port = integer(MASTER_PORT_VAR)
        port = DEFAULT_MASTER_PORT if port is None else port
        if not 0 < port < 65536:
            raise RendezvousError(f"{MASTER_PORT_VAR} must be a TCP port (1-65535), not {port}")
        return cls(world_size=world, rank=rank, local_rank=local_rank, master_addr=addr or "127.0.0.1",
                   master_port=port, agent_store=env.get(AGENT_STORE_VAR) == "True")


class World:
    """This process's place in a training and the collectives training needs; alone (`World()`), every
    collective is a no-op."""

    rank = 0
    size = 1
    local_rank = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes artifacts and checkpoints and reports progress."""
        return self.rank == 0

    def all_reduce_(self, t: torch.Tensor) -> None:
        """Sum t over the ranks, in place."""

    def broadcast_(self, t: torch.Tensor) -> None:
        """Overwrite t with rank 0's."""

    def agree(self, what: str, value: bytes) -> None:
        """Raise RanksDisagree unless every rank holds the same value (only its digest travels)."""

    def finish(self) -> None:
        """Wait for every rank to get here, then leave the training."""

    def announce_failure(self, message: str) -> None:
        """Tell the peers why this rank fails (best effort)."""

    def claim_report(self) -> None:
        """Be the one thread of this process that reports its failure (see `Group`)."""


class Group(World):
    """A rank of a training of several processes (torch.distributed), with its heartbeat."""

    def __init__(self, rdv: Rendezvous, store: torch.distributed.Store, *, device: torch.device,
                 peer_timeout_s: float, on_peer_lost: Callable[[str], None]) -> None:
        self.rdv = rdv
        self.rank, self.size, self.local_rank = rdv.rank, rdv.world_size, rdv.local_rank
        self.device = device
        self.peer_timeout_s = peer_timeout_s
        self._store = store
        self._report = threading.Lock()
        self._on_peer_lost = on_peer_lost
        self._heartbeat = _Heartbeat(rdv, peer_timeout_s, self._lost)
        self._heartbeat.start()

    @classmethod
    def join(cls, rdv: Rendezvous, *, device: torch.device, rendezvous_timeout_s: float, peer_timeout_s: float,
             on_peer_lost: Callable[[str], None]) -> Group:
        """Meet the other ranks (each waits up to rendezvous_timeout_s for all to come) and start beating.

        on_peer_lost(message) is called from the heartbeat's thread when a peer goes silent or the store stops
        answering while this rank's own thread may be stuck inside a collective: it must end the process.
        """
        import torch.distributed as dist

        assert rdv.world_size > 1
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        hosts = rdv.rank == 0 and not rdv.agent_store
        try:
            store = dist.TCPStore(rdv.master_addr, rdv.master_port, rdv.world_size, hosts,
                                  timeout=timedelta(seconds=rendezvous_timeout_s), wait_for_workers=True)
            dist.init_process_group(backend, store=store, rank=rdv.rank, world_size=rdv.world_size,
                                    timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        except RuntimeError as e:  # DistNetworkError, DistStoreError: a timeout or a refused address
            where = f"{rdv.master_addr}:{rdv.master_port}"
            raise PeerLost(f"the {rdv.world_size} workers did not all meet at {where} within "
                           f"{rendezvous_timeout_s:g} s: {_first_line(e)}") from e
        store.set_timeout(timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        store.add(f"{_KEY}/beat/{rdv.rank}", 1)
        log.info("rank %d of %d joined the training at %s:%d (%s)", rdv.rank, rdv.world_size, rdv.master_addr,
                 rdv.master_port, backend)
        return cls(rdv, store, device=device, peer_timeout_s=peer_timeout_s, on_peer_lost=on_peer_lost)

    # -- collectives: a failure becomes PeerLost, naming the peer when the heartbeats tell which --

    def _run(self, op: Callable[[], object]) -> None:
        try:
            op()
        except RuntimeError as e:  # gloo and NCCL raise DistBackendError, a RuntimeError, for a lost peer
            raise PeerLost(self.explain(e)) from e

    def all_reduce_(self, t: torch.Tensor) -> None:
        import torch.distributed as dist

        self._run(lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM))

    def broadcast_(self, t: torch.Tensor) -> None:
        import torch.distributed as dist

        self._run(lambda: dist.broadcast(t, src=0))

    def agree(self, what: str, value: bytes) -> None:
        import torch.distributed as dist

        digest = torch.frombuffer(bytearray(hashlib.sha256(value).digest()), dtype=torch.int64).to(self.device)
        gathered = [torch.empty_like(digest) for _ in range(self.size)]
        self._run(lambda: dist.all_gather(gathered, digest))
        differ = [r for r, d in enumerate(gathered) if not torch.equal(d, gathered[0])]
        if differ:
            ranks = ", ".join(map(str, differ))
            raise RanksDisagree(f"rank {ranks} {'has' if len(differ) == 1 else 'have'} other {what} than rank 0")

    def finish(self) -> None:
        import torch.distributed as dist

        self._run(dist.barrier)  # every rank is done; rank 0 has written what it writes
        # From here no peer is watched, so rank 0 (which hosts the store) may leave at once; the second barrier
        # keeps it until every heartbeat has stopped.
        self._heartbeat.stop()
        self._run(dist.barrier)
        dist.destroy_process_group()

    # -- failures --

    def announce_failure(self, message: str) -> None:
        try:
            self._store.set_timeout(timedelta(seconds=5))  # the store may be gone: do not wait for it long
            self._store.set(f"{_KEY}/failed/{self.rank}", message)
        except Exception:  # noqa: BLE001 - the store may be what failed; the message is still emitted locally
            pass

    def claim_report(self) -> None:
        """Called by the main thread before it reports a failure: if the heartbeat thread is already ending
        the process with its own report, this blocks until it has."""
        self._report.acquire()

    def _lost(self, message: str) -> None:
        if self._report.acquire(blocking=False):  # the main thread is not reporting a failure already
            self._on_peer_lost(message)

    def explain(self, error: BaseException) -> str:
        """Why a collective failed, as far as the store tells within a few seconds: a peer's own word, a
        peer gone silent, or the store (rank 0) gone."""
        deadline = time.monotonic() + min(EXPLAIN_WAIT_S, self.peer_timeout_s)
        while True:
            said = self._heartbeat.failures()
            if said:
                return "; ".join(f"rank {r} failed: {m}" for r, m in sorted(said.items()))
            if self._heartbeat.store_lost is not None:
                return self._heartbeat.store_lost
            silent = self._heartbeat.silent(SILENT_AFTER_FAILURE_S)
            if silent:
                return _silent_message(silent, SILENT_AFTER_FAILURE_S)
            if time.monotonic() >= deadline:
                return f"a peer rank failed or left: {_first_line(error)}"
            time.sleep(0.1)


class _Heartbeat(threading.Thread):
    """Beats this rank's counter in the store and watches the others' (its own store client: the main
    thread's may be busy)."""

    def __init__(self, rdv: Rendezvous, peer_timeout_s: float, on_lost: Callable[[str], None]) -> None:
        super().__init__(name=f"nulog-heartbeat-{rdv.rank}", daemon=True)
        import torch.distributed as dist

        self.rdv = rdv
        self.peer_timeout_s = peer_timeout_s
        self.on_lost = on_lost
        self.store = dist.TCPStore(rdv.master_addr, rdv.master_port, None, False,
                                   timeout=timedelta(seconds=max(5.0, 4 * HEARTBEAT_S)), wait_for_workers=False)
        now = time.monotonic()
        self.seen = {r: (0, now) for r in range(rdv.world_size) if r != rdv.rank}  # rank -> (count, when it moved)
        self.store_lost: str | None = None
        self._failures: dict[int, str] = {}
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10 * HEARTBEAT_S)

    def silent(self, seconds: float) -> list[int]:
        """The peers whose counter has not moved for this many seconds."""
        now = time.monotonic()
        return [r for r, (_, t) in list(self.seen.items()) if now - t >= seconds]

    def failures(self) -> dict[int, str]:
        return dict(self._failures)

    def run(self) -> None:
        key = f"{_KEY}/beat/{{}}".format
        while not self._halt.wait(HEARTBEAT_S):
            try:
                self.store.add(key(self.rdv.rank), 1)
                now = time.monotonic()
                for r, (count, _) in list(self.seen.items()):
                    latest = self.store.add(key(r), 0)  # reads the counter
                    if latest != count:
                        self.seen[r] = (latest, now)
                    failed = f"{_KEY}/failed/{r}"
                    if r not in self._failures and self.store.check([failed]):
                        self._failures[r] = self.store.get(failed).decode("utf-8", "replace")
                        if not self._halt.is_set():  # a peer that fails fails the training: say so at once
                            self.on_lost(f"rank {r} failed: {self._failures[r]}")
                            return
            except Exception as e:  # noqa: BLE001 - any store error means the store's host is gone
                if self._halt.is_set():
                    return
                host = "the torchrun agent" if self.rdv.agent_store else "rank 0"
                self.store_lost = (f"the rendezvous store at {self.rdv.master_addr}:{self.rdv.master_port}, which "
                                   f"{host} hosts, stopped answering ({_first_line(e)}): {host} is gone")
                self.on_lost(self.store_lost)
                return
            silent = self.silent(self.peer_timeout_s)
            if silent and not self._halt.is_set():
                self.on_lost(_silent_message(silent, self.peer_timeout_s))
                return


def _silent_message(ranks: list[int], seconds: float) -> str:
    names = ", ".join(map(str, ranks))
    return f"rank {names} stopped answering (no heartbeat for {seconds:g} s: killed, or its machine is gone)"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
