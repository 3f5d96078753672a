"""The job records in memory, indexed for the questions asked of them.

Every request a client makes about jobs is answered from here without a scan: a record by id, the number
of jobs under way or queued, a queued job's place in the queue, the most recent jobs a page at a time, and
the copies of a request already seen (by stream sequence, Nats-Msg-Id or payload hash). The state store
keeps one index, current with every write it makes; nothing here does I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from training_controller.core.jobs import JobPhase, JobRecord


class RecordIndex:
    """Job records by id and by submission order, with the indexes the use cases need."""

    def __init__(self) -> None:
        self._by_id: dict[str, JobRecord] = {}
        self._seqs: list[int] = []  # every record's seq, sorted
        self._id_of_seq: dict[int, str] = {}
        self._queued: list[int] = []  # seqs of queued records, sorted
        self._under_way: set[str] = set()  # ids of records neither queued nor final
        self._by_stream_seq: dict[int, str] = {}
        self._by_msg_id: dict[str, str] = {}
        self._by_hash: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, job_id: str) -> JobRecord | None:
        return self._by_id.get(job_id)

    def put(self, record: JobRecord) -> None:
        old = self._by_id.get(record.job_id)
        if old is not None and old.seq != record.seq:
            self.remove(old.job_id)
            old = None
        if old is not None:
            self._unindex(old)
        self._by_id[record.job_id] = record
        if old is None or old.seq != record.seq:
            bisect.insort(self._seqs, record.seq)
            self._id_of_seq[record.seq] = record.job_id
        if record.phase is JobPhase.QUEUED:
            bisect.insort(self._queued, record.seq)
        elif not record.phase.is_final:
            self._under_way.add(record.job_id)
        if record.stream_seq is not None:
            self._by_stream_seq[record.stream_seq] = record.job_id
        if record.msg_id:
            self._by_msg_id[record.msg_id] = record.job_id
        if record.request_hash:
            ids = self._by_hash.setdefault(record.request_hash, [])
            if record.job_id not in ids:
                ids.append(record.job_id)

    def remove(self, job_id: str) -> JobRecord | None:
        old = self._by_id.pop(job_id, None)
        if old is None:
            return None
        self._unindex(old)
        i = bisect.bisect_left(self._seqs, old.seq)
        if i < len(self._seqs) and self._seqs[i] == old.seq:
            del self._seqs[i]
        self._id_of_seq.pop(old.seq, None)
        ids = self._by_hash.get(old.request_hash)
        if ids and job_id in ids:
            ids.remove(job_id)
            if not ids:
                del self._by_hash[old.request_hash]
        return old

    def _unindex(self, old: JobRecord) -> None:
        """Drop what depends on the phase and the copies' keys; the seq and hash stay until remove()."""
        if old.phase is JobPhase.QUEUED:
            i = bisect.bisect_left(self._queued, old.seq)
            if i < len(self._queued) and self._queued[i] == old.seq:
                del self._queued[i]
        self._under_way.discard(old.job_id)
        if old.stream_seq is not None and self._by_stream_seq.get(old.stream_seq) == old.job_id:
            del self._by_stream_seq[old.stream_seq]
        if old.msg_id and self._by_msg_id.get(old.msg_id) == old.job_id:
            del self._by_msg_id[old.msg_id]

    # -- questions ----------------------------------------------------------------------------------------

    def all(self) -> list[JobRecord]:
        """Every record, by submission order."""
        return [self._by_id[self._id_of_seq[s]] for s in self._seqs]

    def pending(self) -> list[JobRecord]:
        """The records under way, then the queued ones, each by submission order."""
        under_way = sorted((self._by_id[i] for i in self._under_way), key=lambda r: r.seq)
        return under_way + [self._by_id[self._id_of_seq[s]] for s in self._queued]

    def pending_count(self) -> int:
        return len(self._under_way) + len(self._queued)

    def next_to_run(self) -> JobRecord | None:
        """A job under way first (after a restart), else the oldest queued one."""
        if self._under_way:
            return min((self._by_id[i] for i in self._under_way), key=lambda r: r.seq)
        return self._by_id[self._id_of_seq[self._queued[0]]] if self._queued else None

    def queue_position(self, job_id: str) -> int:
        """How many jobs will run before this one (0: it runs now or next)."""
        record = self._by_id.get(job_id)
        if record is None or record.phase is not JobPhase.QUEUED:
            return 0
        return bisect.bisect_left(self._queued, record.seq) + len(self._under_way)

    def recent(self, *, limit: int, phase: JobPhase | None = None, before_seq: int | None = None) -> list[JobRecord]:
        """Up to `limit` records, most recent first, older than `before_seq` when given."""
        end = len(self._seqs) if before_seq is None else bisect.bisect_left(self._seqs, before_seq)
        found: list[JobRecord] = []
        for i in range(end - 1, -1, -1):
            record = self._by_id[self._id_of_seq[self._seqs[i]]]
            if phase is None or record.phase is phase:
                found.append(record)
                if len(found) >= limit:
                    break
        return found

    def copies(self, *, stream_seq: int | None, msg_id: str | None, request_hash: str) -> Iterator[JobRecord]:
        """Records that may be copies of one request: by stream sequence, by message id, by payload hash."""
        if stream_seq is not None and (job_id := self._by_stream_seq.get(stream_seq)):
            yield self._by_id[job_id]
        if msg_id and (job_id := self._by_msg_id.get(msg_id)):
            yield self._by_id[job_id]
        for job_id in reversed(self._by_hash.get(request_hash, [])):
            yield self._by_id[job_id]

    def beyond_retention(self, *, keep: int, older_than: str | None) -> list[str]:
        """Ids of ended records past the retention: all but the `keep` most recent ones, and any that ended
        before `older_than` (an ISO timestamp). Jobs not ended are always kept."""
        ended = [self._by_id[self._id_of_seq[s]] for s in self._seqs]
        ended = [r for r in ended if r.phase.is_final]
        drop = {r.job_id for r in ended[: max(0, len(ended) - keep)]}
        if older_than is not None:
            drop |= {r.job_id for r in ended if (r.finished_at or r.updated_at) < older_than}
        return [r.job_id for r in ended if r.job_id in drop]
