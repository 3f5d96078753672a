"""The exporters: what an export writes, and the process-based one's errors, cancellation and deaths.

The process-based exporter runs real child processes. Their sources are the classes below: the child
imports this module to build them, from the factories it is handed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import json
import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from training_controller.adapters.export.process import ProcessExporter
from training_controller.adapters.logs.files import FilesLogSource
from training_controller.adapters.storage.local import LocalObjectStore
from training_controller.core.errors import (
    NoTrainingData,
    PermanentError,
    SourceRejected,
    SourceUnavailable,
    TemporaryError,
)
from training_controller.core.export import DATA_FILE, InProcessExporter
from training_controller.core.masking import mask_reference
from training_controller.core.ports import LogDocument, LogSource
from training_controller.core.queries import Interval, LogQuery

REPO = Path(__file__).resolve().parents[2]
S = 10**9
T0 = 1_617_038_400 * S  # on a minute boundary
EVERYTHING = LogQuery(intervals=(Interval(start_ns=T0, end_ns=T0 + 3600 * S),))


def _write_logs(directory: Path, n: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"timestamp": T0 + i * S, "log": f"GET /api/items/{i} HTTP/1.1 200 from 10.0.0.{i % 250}"})
        for i in range(n)
    ]
    (directory / "a.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def _own_autogroup() -> str:
    """This process's session scheduling group and its nice, e.g. `/autogroup-12 nice 19`."""
    return Path("/proc/self/autogroup").read_text()


class SlowSource(LogSource):
    """Batches of one document, forever, a little apart; says in files where it is (for the test process)."""

    def __init__(self, directory: Path, *, log_message: str = "") -> None:
        self.directory = directory
        self.log_message = log_message

    async def count(self, query: LogQuery) -> int:
        return 0

    async def stream(self, query: LogQuery) -> AsyncIterator[list[LogDocument]]:
        (self.directory / "policy").write_text(str(os.sched_getscheduler(0)))
        with contextlib.suppress(OSError):  # a kernel without autogroups
            (self.directory / "autogroup").write_text(_own_autogroup())
        (self.directory / "pid").write_text(str(os.getpid()))
        if self.log_message:
            logging.getLogger("tests.slow_source").warning(self.log_message)
        for i in range(10**9):
            with (self.directory / "progress").open("a") as f:
                f.write(".")
            yield [{"timestamp": T0 + i, "log": f"line {i}"}]
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        (self.directory / "closed").write_text("yes")


class FailingSource(LogSource):
    """Raises the given error on the first batch."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def count(self, query: LogQuery) -> int:
        return 0

    async def stream(self, query: LogQuery) -> AsyncIterator[list[LogDocument]]:
        raise self.error
        yield []  # pragma: no cover - makes this an async generator


class Unpicklable(Exception):
    """An exception whose constructor takes two arguments, so pickle cannot rebuild it from its args."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b}")


class UnpicklableErrorSource(FailingSource):
    def __init__(self) -> None:
        super().__init__(Unpicklable("x", "y"))


def _store(root: Path) -> LocalObjectStore:
    return LocalObjectStore(root)


def _process_exporter(source_factory, root: Path, **options) -> ProcessExporter:
    return ProcessExporter(source_factory, functools.partial(_store, root), **options)


def _poll(ready, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.02)
    return ready()


async def _wait_for(path: Path, timeout: float = 30.0) -> str:
    """The text of a file the worker writes, once it is there."""
    assert await asyncio.to_thread(_poll, path.exists, timeout), f"{path} never appeared"
    return await asyncio.to_thread(path.read_text)


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()]


def _alive(pid: int) -> bool:
    """Whether the process still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def _gone(pid: int, timeout: float = 10.0) -> bool:
    return await asyncio.to_thread(_poll, lambda: not _alive(pid), timeout)


# --- what an export writes -----------------------------------------------------------------------------


async def test_in_process_export_writes_masked_windows_and_a_manifest(tmp_path: Path):
    logs = _write_logs(tmp_path / "logs", 150)
    store = LocalObjectStore(tmp_path / "store")

    result = await InProcessExporter(FilesLogSource(logs), store).export(
        EVERYTHING, job_id="j1", bucket="training-logs", window_seconds=60
    )

    windows = [json.loads(line) for line in gzip.decompress(await store.get_bytes("training-logs", "j1/" + DATA_FILE)).splitlines()]
    assert (result.count, result.windows) == (150, 3)
    assert [w["count"] for w in windows] == [60, 60, 30]
    assert [(w["start_ts"], w["end_ts"]) for w in windows][0] == (T0, T0 + 60 * S)
    assert windows[0]["logs"][7] == mask_reference("GET /api/items/7 HTTP/1.1 200 from 10.0.0.7")
    assert windows[0]["logs"][7] == "GET /api/items/<NUM> HTTP/1.1 <NUM> from <IP>"
    manifest = json.loads(await store.get_bytes("training-logs", "j1/manifest.json"))
    assert manifest["count"] == 150 and manifest["sha256"] == result.sha256


async def test_process_export_writes_exactly_what_the_in_process_export_writes(tmp_path: Path):
    logs = _write_logs(tmp_path / "logs", 500)
    inside, outside = LocalObjectStore(tmp_path / "in"), tmp_path / "out"

    expected = await InProcessExporter(FilesLogSource(logs), inside).export(
        EVERYTHING, job_id="j1", bucket="training-logs", window_seconds=60
    )
    result = await _process_exporter(functools.partial(FilesLogSource, logs), outside).export(
        EVERYTHING, job_id="j1", bucket="training-logs", window_seconds=60
    )

    assert result == expected
    for key in (result.data_key, result.manifest_key):
        assert (outside / "training-logs" / key).read_bytes() == await inside.get_bytes("training-logs", key)


async def test_the_same_documents_give_the_same_hash(tmp_path: Path):
    logs = _write_logs(tmp_path / "logs", 100)
    exporter = InProcessExporter(FilesLogSource(logs), LocalObjectStore(tmp_path / "store"))

    first = await exporter.export(EVERYTHING, job_id="a", bucket="b", window_seconds=60)
    second = await exporter.export(EVERYTHING, job_id="b", bucket="b", window_seconds=60)

    assert first.sha256 == second.sha256


# --- errors cross the process boundary as themselves ---------------------------------------------------


async def test_no_matching_documents_is_no_training_data_from_the_worker_too(tmp_path: Path):
    logs = _write_logs(tmp_path / "logs", 10)
    exporter = _process_exporter(functools.partial(FilesLogSource, logs), tmp_path / "store")
    nothing = LogQuery(intervals=(Interval(start_ns=0, end_ns=1),))

    with pytest.raises(NoTrainingData, match="no log documents match"):
        await exporter.export(nothing, job_id="j1", bucket="training-logs", window_seconds=60)


async def test_a_temporary_error_in_the_worker_arrives_as_itself_with_its_delay(tmp_path: Path):
    error = SourceUnavailable("Elasticsearch at http://es:9200: search failed after 5 tries", delay=1.5)
    exporter = _process_exporter(functools.partial(FailingSource, error), tmp_path / "store")

    with pytest.raises(SourceUnavailable) as info:
        await exporter.export(EVERYTHING, job_id="j1", bucket="b", window_seconds=60)

    assert str(info.value) == "Elasticsearch at http://es:9200: search failed after 5 tries"
    assert info.value.delay == 1.5
    (note,) = info.value.__notes__  # the worker's traceback, ending where the source raised
    assert note.startswith("raised in the export worker (pid ") and "raise self.error" in note


async def test_a_permanent_error_in_the_worker_arrives_as_itself(tmp_path: Path):
    error = SourceRejected("Elasticsearch refused search (401): security_exception")
    exporter = _process_exporter(functools.partial(FailingSource, error), tmp_path / "store")

    with pytest.raises(SourceRejected, match=r"refused search \(401\)"):
        await exporter.export(EVERYTHING, job_id="j1", bucket="b", window_seconds=60)


async def test_an_unexpected_error_in_the_worker_arrives_as_itself(tmp_path: Path):
    exporter = _process_exporter(functools.partial(FailingSource, KeyError("timestamp")), tmp_path / "store")

    with pytest.raises(KeyError, match="timestamp"):
        await exporter.export(EVERYTHING, job_id="j1", bucket="b", window_seconds=60)


async def test_an_error_that_cannot_be_pickled_arrives_as_a_permanent_error_naming_it(tmp_path: Path):
    exporter = _process_exporter(UnpicklableErrorSource, tmp_path / "store")

    with pytest.raises(PermanentError, match=r"^x and y \(tests\.unit\.test_exporter\.Unpicklable in the export worker\)"):
        await exporter.export(EVERYTHING, job_id="j1", bucket="b", window_seconds=60)


def test_factories_that_do_not_pickle_are_refused_when_the_exporter_is_made(tmp_path: Path):
    with pytest.raises(TypeError, match="source_factory must pickle"):
        ProcessExporter(lambda: FilesLogSource(tmp_path), functools.partial(_store, tmp_path))
    with pytest.raises(TypeError, match="store_factory must pickle"):  # pickles, but does not come back
        ProcessExporter(functools.partial(FilesLogSource, tmp_path), functools.partial(_store, Unpicklable("x", "y")))


async def test_the_workers_log_records_reach_the_controllers_loggers(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    source = functools.partial(SlowSource, tmp_path, log_message="backend slow, retrying")
    task = asyncio.create_task(_process_exporter(source, tmp_path / "store").export(
        EVERYTHING, job_id="j1", bucket="b", window_seconds=60
    ))
    await _wait_for(tmp_path / "progress")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    (record,) = [r for r in caplog.records if r.name == "tests.slow_source"]
    assert record.levelno == logging.WARNING and record.getMessage() == "backend slow, retrying"


# --- priority, cancellation and death --------------------------------------------------------------------


@pytest.mark.parametrize("idle", [True, False])
async def test_the_worker_runs_only_when_the_cpu_has_nothing_else_to_do_unless_told_otherwise(
    tmp_path: Path, idle: bool
):
    task = asyncio.create_task(
        _process_exporter(functools.partial(SlowSource, tmp_path), tmp_path / "store", idle_priority=idle).export(
            EVERYTHING, job_id="j1", bucket="b", window_seconds=60
        )
    )
    await _wait_for(tmp_path / "pid")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    policy = int((tmp_path / "policy").read_text())
    assert policy == (os.SCHED_IDLE if idle else os.sched_getscheduler(0))
    if (tmp_path / "autogroup").exists():  # its session's scheduling group yields too (see _idle_priority)
        nice = int((tmp_path / "autogroup").read_text().split()[-1])
        assert nice == (19 if idle else 0)


async def test_cancelling_the_export_stops_the_worker_promptly_and_runs_its_cleanup(tmp_path: Path):
    task = asyncio.create_task(
        _process_exporter(functools.partial(SlowSource, tmp_path), tmp_path / "store").export(
            EVERYTHING, job_id="j1", bucket="b", window_seconds=60
        )
    )
    pid = int(await _wait_for(tmp_path / "pid"))
    await _wait_for(tmp_path / "progress")

    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert time.monotonic() - started < 5
    assert not _alive(pid)
    assert (tmp_path / "closed").read_text() == "yes"  # the source was closed: a real one closes its PIT
    progress = (tmp_path / "progress").read_text()
    await asyncio.sleep(0.2)
    assert (tmp_path / "progress").read_text() == progress  # nothing exports any more


async def test_a_worker_killed_by_the_oom_killer_becomes_a_temporary_error(tmp_path: Path):
    task = asyncio.create_task(
        _process_exporter(functools.partial(SlowSource, tmp_path), tmp_path / "store").export(
            EVERYTHING, job_id="j1", bucket="b", window_seconds=60
        )
    )
    pid = int(await _wait_for(tmp_path / "pid"))
    helpers = _children(pid)  # its masking process (and multiprocessing's resource tracker)

    os.kill(pid, signal.SIGKILL)

    with pytest.raises(TemporaryError, match=r"export worker of job j1 \(pid \d+\) was killed by SIGKILL.*OOM"):
        await asyncio.wait_for(task, 30)
    assert helpers and all([await _gone(helper) for helper in helpers]), "a masking process outlived its worker"


_PARENT = textwrap.dedent("""
    import asyncio, functools, sys
    from pathlib import Path
    from tests.unit.test_exporter import EVERYTHING, SlowSource, _process_exporter
    here = Path(sys.argv[1])
    asyncio.run(_process_exporter(functools.partial(SlowSource, here), here / "store").export(
        EVERYTHING, job_id="j1", bucket="b", window_seconds=60))
""")


async def test_a_worker_stops_when_the_controller_dies(tmp_path: Path):
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", _PARENT, str(tmp_path), cwd=REPO)
    try:
        pid = int(await _wait_for(tmp_path / "pid"))
        parent.kill()
        await parent.wait()

        assert await _gone(pid), "the export worker outlived its controller"
    finally:
        if parent.returncode is None:
            parent.kill()
