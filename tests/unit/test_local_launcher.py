"""The local launcher, driven with a fake `python` script: events, cancel, restart reconciliation, commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nulog.protocol import ErrorEvent, JobArgs, ProgressEvent
from tests.processes import live_members
from training_controller.adapters.launchers import local as local_module
from training_controller.adapters.launchers.local import LocalLauncher, terminate_jobs
from training_controller.core.ports import (
    Finished,
    JobSpec,
    LauncherEvent,
    LogLine,
    StillRunning,
    TrainerOutput,
    WorkerState,
)

PROGRESS_1 = {"event": "progress", "epoch": 1, "epochs": 1, "step": 1, "steps": 2, "loss": 0.5, "percent": 50,
              "elapsed_s": 1, "eta_s": 1}
PROGRESS_2 = {**PROGRESS_1, "step": 2, "loss": 0.25, "percent": 100, "eta_s": 0}

# The fake `python`: ignores its arguments and does what the file `mode` next to it says.
FAKE = f"""#!/bin/sh
mode=$(cat "$(dirname "$0")/mode")
case "$mode" in
  succeed)
    echo '{json.dumps(PROGRESS_1)}'
    echo 'plain text, not an event'
    echo '{json.dumps(PROGRESS_2)}'
    echo 'some progress on stderr' >&2
    exit 0 ;;
  fail)
    echo '{json.dumps(PROGRESS_1)}'
    echo '{{"event":"error","message":"out of memory"}}'
    echo 'Traceback: boom' >&2
    exit 1 ;;
  crash)
    echo 'dying quietly' >&2
    exit 3 ;;
  args)
    for a in "$@"; do echo "$a"; done
    exit 0 ;;
  sleep)
    echo '{json.dumps(PROGRESS_1)}'
    exec sleep 30 ;;
  stubborn)
    trap '' TERM
    echo '{json.dumps(PROGRESS_1)}'
    sleep 30 ;;
esac
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "fake-python"
    path.parent.mkdir()
    path.write_text(FAKE)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "jobs"
    yield path
    if path.is_dir():
        terminate_jobs(path, sig=signal.SIGKILL)  # no sleeping fake outlives its test


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_module, "POLL_SECONDS", 0.02)


def _mode(fake_python: Path, mode: str) -> None:
    (fake_python.parent / "mode").write_text(mode)


def _spec(job_id: str = "job-1", **fields) -> JobSpec:
    defaults = {"data": ("/data/a.jsonl.gz",), "output": "/models/job-1", "epochs": 1, "seed": 0}
    return JobSpec(job_id=job_id, args=JobArgs(job_id=job_id, **{**defaults, **fields}))


async def _events(launcher: LocalLauncher, job_id: str, timeout: float = 10.0) -> list[LauncherEvent]:
    """Every event but the keep-alives."""

    async def collect() -> list[LauncherEvent]:
        return [event async for event in launcher.events(job_id) if not isinstance(event, StillRunning)]

    return await asyncio.wait_for(collect(), timeout)


def kinds(events: list[LauncherEvent]) -> list[str]:
    names = {TrainerOutput: "event", LogLine: "log", Finished: "finished", StillRunning: "still running"}
    return [names[type(e)] for e in events]


async def _wait_for_exit_code(jobs_dir: Path, job_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (jobs_dir / job_id / "exit_code").exists():
        assert time.monotonic() < deadline, f"job {job_id} did not end"
        await asyncio.sleep(0.02)


async def _wait_for_line(jobs_dir: Path, job_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    log = jobs_dir / job_id / "events.log"
    while not (log.exists() and log.read_bytes().endswith(b"\n")):
        assert time.monotonic() < deadline, f"job {job_id} wrote nothing"
        await asyncio.sleep(0.02)


async def _ended_job(launcher: LocalLauncher, jobs_dir: Path, fake_python: Path, job_id: str, mode: str) -> None:
    """Launch job_id with the fake trainer in `mode` and wait until it has exited."""
    _mode(fake_python, mode)
    await launcher.launch(_spec(job_id))
    await _wait_for_exit_code(jobs_dir, job_id)


async def _running_job(launcher: LocalLauncher, jobs_dir: Path, fake_python: Path, job_id: str) -> None:
    """Launch job_id with the fake trainer sleeping and wait until it has written its first line."""
    _mode(fake_python, "sleep")
    await launcher.launch(_spec(job_id))
    await _wait_for_line(jobs_dir, job_id)


async def test_successful_job_reports_progress_log_lines_and_one_finished_event(jobs_dir: Path, fake_python: Path):
    _mode(fake_python, "succeed")
    launcher = LocalLauncher(jobs_dir, python=str(fake_python))

    await launcher.launch(_spec())
    events = await _events(launcher, "job-1")

    assert kinds(events) == ["event", "log", "event", "finished"]
    assert events[0] == TrainerOutput(ProgressEvent(**PROGRESS_1))
    assert events[1] == LogLine("plain text, not an event")
    assert events[2] == TrainerOutput(ProgressEvent(**PROGRESS_2))
    assert events[-1].succeeded is True
    assert events[-1].message == "exit code 0"
    assert json.loads((jobs_dir / "job-1" / "spec.json").read_text())["job_id"] == "job-1"
    assert (jobs_dir / "job-1" / "stderr.log").read_text() == "some progress on stderr\n"


async def test_failing_job_ends_with_a_failed_event_carrying_its_error_message(jobs_dir: Path, fake_python: Path):
    _mode(fake_python, "fail")
    launcher = LocalLauncher(jobs_dir, python=str(fake_python))

    await launcher.launch(_spec())
    events = await _events(launcher, "job-1")

    assert kinds(events) == ["event", "event", "finished"]
    assert events[1] == TrainerOutput(ErrorEvent(message="out of memory"))
    finished = events[-1]
    assert finished.succeeded is False
    assert finished.message == "exit code 1: out of memory"


async def test_failing_job_without_an_error_event_reports_its_stderr(jobs_dir: Path, fake_python: Path):
    _mode(fake_python, "crash")
    launcher = LocalLauncher(jobs_dir, python=str(fake_python))

    await launcher.launch(_spec())
    events = await _events(launcher, "job-1")

    assert kinds(events) == ["finished"]
    assert events[0].succeeded is False
    assert events[0].message == "exit code 3: dying quietly"


async def test_cancel_ends_a_running_job_with_a_failed_finished_event(jobs_dir: Path, fake_python: Path):
    _mode(fake_python, "sleep")
    launcher = LocalLauncher(jobs_dir, python=str(fake_python))
    await launcher.launch(_spec())
    await _wait_for_line(jobs_dir, "job-1")

    await launcher.cancel("job-1")
    events = await _events(launcher, "job-1")

    assert kinds(events) == ["event", "finished"]
    assert events[-1].succeeded is False
    assert events[-1].message
    assert [j.state for j in await LocalLauncher(jobs_dir).list_jobs()] == ["failed"]


async def test_cancel_of_an_unknown_job_does_nothing(jobs_dir: Path):
    await asyncio.to_thread(jobs_dir.mkdir)

    await LocalLauncher(jobs_dir).cancel("nope")

    assert await asyncio.to_thread(lambda: list(jobs_dir.iterdir())) == []


async def test_new_launcher_reconciles_ended_and_running_jobs(jobs_dir: Path, fake_python: Path):
    first = LocalLauncher(jobs_dir, python=str(fake_python))
    await _ended_job(first, jobs_dir, fake_python, "job-a", "succeed")
    await _ended_job(first, jobs_dir, fake_python, "job-b", "fail")
    await _running_job(first, jobs_dir, fake_python, "job-c")

    restarted = LocalLauncher(jobs_dir, python=str(fake_python))
    jobs = {j.job_id: j for j in await restarted.list_jobs()}

    assert {k: j.state for k, j in jobs.items()} == {"job-a": "succeeded", "job-b": "failed", "job-c": "running"}
    assert jobs["job-a"].message == "exit code 0"
    assert jobs["job-b"].message == "exit code 1"


async def test_job_whose_process_vanished_without_exit_code_is_listed_as_failed(jobs_dir: Path):
    job_dir = jobs_dir / "ghost"
    job_dir.mkdir(parents=True)
    (job_dir / "pid").write_text("999999999")

    jobs = await LocalLauncher(jobs_dir).list_jobs()

    assert [(j.job_id, j.state, j.message) for j in jobs] == [("ghost", "failed", "the training process disappeared")]


async def test_list_jobs_of_a_missing_directory_is_empty(tmp_path: Path):
    assert await LocalLauncher(tmp_path / "none").list_jobs() == []


async def test_new_launcher_replays_the_events_of_a_finished_job(jobs_dir: Path, fake_python: Path):
    _mode(fake_python, "fail")
    await LocalLauncher(jobs_dir, python=str(fake_python)).launch(_spec())
    await _wait_for_exit_code(jobs_dir, "job-1")

    events = await _events(LocalLauncher(jobs_dir, python=str(fake_python)), "job-1")

    assert kinds(events) == ["event", "event", "finished"]
    assert events[0] == TrainerOutput(ProgressEvent(**PROGRESS_1))
    assert (events[-1].succeeded, events[-1].message) == (False, "exit code 1: out of memory")


async def test_events_of_a_replayed_successful_job_end_in_success(jobs_dir: Path, fake_python: Path):
    _mode(fake_python, "succeed")
    await LocalLauncher(jobs_dir, python=str(fake_python)).launch(_spec())
    await _wait_for_exit_code(jobs_dir, "job-1")

    events = await _events(LocalLauncher(jobs_dir), "job-1")

    assert kinds(events) == ["event", "log", "event", "finished"]
    assert events[-1].succeeded is True


async def test_last_line_without_newline_is_still_reported(jobs_dir: Path):
    job_dir = jobs_dir / "job-1"
    job_dir.mkdir(parents=True)
    (job_dir / "events.log").write_text('{"event":"error","message":"out of memory"}')
    (job_dir / "exit_code").write_text("1\n")

    events = await _events(LocalLauncher(jobs_dir), "job-1")

    assert kinds(events) == ["event", "finished"]
    assert events[-1].message == "exit code 1: out of memory"


async def test_launching_a_job_that_was_launched_already_starts_nothing(jobs_dir: Path, fake_python: Path):
    _mode(fake_python, "args")
    launcher = LocalLauncher(jobs_dir, python=str(fake_python))
    await launcher.launch(_spec())
    await _wait_for_exit_code(jobs_dir, "job-1")

    await launcher.launch(_spec())
    await LocalLauncher(jobs_dir, python=str(fake_python)).launch(_spec())

    events = await _events(launcher, "job-1")
    assert kinds(events)[-1] == "finished"
    assert [e.line for e in events if isinstance(e, LogLine)].count("--job-id") == 1


async def test_a_launch_that_died_before_its_process_started_is_launched_again(jobs_dir: Path, fake_python: Path):
    (jobs_dir / "job-1").mkdir(parents=True)  # the controller died between mkdir and the process
    (jobs_dir / "job-1" / "spec.json").write_text("{}")
    _mode(fake_python, "succeed")
    launcher = LocalLauncher(jobs_dir, python=str(fake_python))

    assert await launcher.list_jobs() == []
    await launcher.launch(_spec())
    events = await _events(launcher, "job-1")

    assert events[-1] == Finished(succeeded=True, message="exit code 0")


async def test_cancel_kills_a_trainer_that_ignores_sigterm_and_returns_once_it_has_ended(
    jobs_dir: Path, fake_python: Path
):
    _mode(fake_python, "stubborn")
    launcher = LocalLauncher(jobs_dir, python=str(fake_python), cancel_grace_seconds=0.5)
    await launcher.launch(_spec())
    await _wait_for_line(jobs_dir, "job-1")
    pgid = int((jobs_dir / "job-1" / "pid").read_text())

    started = time.monotonic()
    await launcher.cancel("job-1")

    assert time.monotonic() - started >= 0.5  # it waited out the grace period, then killed
    assert live_members(pgid) == []  # nothing of the job's process group runs
    assert kinds(await _events(launcher, "job-1"))[-1] == "finished"


async def test_a_quiet_job_is_reported_still_running(jobs_dir: Path, fake_python: Path, monkeypatch):
    monkeypatch.setattr(local_module, "STILL_RUNNING_SECONDS", 0.1)
    _mode(fake_python, "sleep")
    launcher = LocalLauncher(jobs_dir, python=str(fake_python))
    await launcher.launch(_spec())

    seen: list[LauncherEvent] = []
    async for event in launcher.events("job-1"):
        seen.append(event)
        if sum(isinstance(e, StillRunning) for e in seen) >= 2:
            break
    await launcher.cancel("job-1")

    assert isinstance(seen[0], TrainerOutput)


async def test_launch_with_a_missing_interpreter_ends_in_failure(jobs_dir: Path, tmp_path: Path):
    launcher = LocalLauncher(jobs_dir, python=str(tmp_path / "no-such-python"))

    await launcher.launch(_spec())
    events = await _events(launcher, "job-1")

    assert isinstance(events[-1], Finished) and events[-1].succeeded is False
    assert events[-1].message.startswith("exit code 127")


async def test_job_receives_the_command_line_of_its_spec(jobs_dir: Path, fake_python: Path):
    _mode(fake_python, "args")
    launcher = LocalLauncher(jobs_dir, python=str(fake_python))
    spec = _spec(data=("/d/one file.gz", "/d/two.gz"), max_lines=50)

    await launcher.launch(spec)
    events = await _events(launcher, "job-1")

    argv = [e.line for e in events[:-1]]
    assert argv == spec.command(str(fake_python))[1:]
    assert JobArgs.from_argv(argv[2:]) == spec.args  # what the job reads back is what was launched


async def test_terminate_jobs_signals_only_running_jobs(jobs_dir: Path, fake_python: Path):
    launcher = LocalLauncher(jobs_dir, python=str(fake_python))
    await _ended_job(launcher, jobs_dir, fake_python, "done", "succeed")
    await _running_job(launcher, jobs_dir, fake_python, "busy")

    signalled = terminate_jobs(jobs_dir)

    assert signalled == ["busy"]
    events = await _events(launcher, "busy")
    assert isinstance(events[-1], Finished) and events[-1].succeeded is False
    assert (jobs_dir / "done" / "exit_code").read_text().strip() == "0"  # the ended job was left alone


def test_terminate_jobs_ignores_stale_and_garbled_pid_files(tmp_path: Path):
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "pid").write_text("999999999")
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "pid").write_text("not a pid")

    assert terminate_jobs(tmp_path) == []


async def test_ping_creates_a_writable_jobs_dir(jobs_dir: Path):
    assert await LocalLauncher(jobs_dir).ping() is True
    assert await asyncio.to_thread(jobs_dir.is_dir)


def test_fake_python_is_executable(fake_python: Path):
    assert os.access(fake_python, os.X_OK)


async def test_a_trainer_whose_wrapper_was_killed_alone_is_still_followed_until_it_ends(
    jobs_dir: Path, fake_python: Path
):
    _mode(fake_python, "sleep")
    launcher = LocalLauncher(jobs_dir, python=str(fake_python))
    await launcher.launch(_spec())
    await _wait_for_line(jobs_dir, "job-1")
    pgid = int((jobs_dir / "job-1" / "pid").read_text())
    os.kill(pgid, signal.SIGKILL)  # the wrapper only; the trainer, in its group, runs on

    stream = launcher.events("job-1")
    first = await asyncio.wait_for(anext(stream), 5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(stream), 1)  # no Finished while the trainer runs
    await stream.aclose()
    assert live_members(pgid)

    await launcher.cancel("job-1")
    events = await _events(launcher, "job-1")
    assert isinstance(first, TrainerOutput)
    assert events[-1] == Finished(succeeded=False, message="the training process disappeared")
    assert live_members(pgid) == []


# -- several workers ----------------------------------------------------------------------------------------

RANKED = f"""#!/bin/sh
echo "rank $RANK of $WORLD_SIZE at $MASTER_ADDR:$MASTER_PORT local $LOCAL_RANK" >&2
if [ "$RANK" = "0" ]; then echo '{json.dumps(PROGRESS_1)}'; fi
mode=$(cat "$(dirname "$0")/mode")
if [ "$mode" = "rank1-fails" ] && [ "$RANK" = "1" ]; then
  echo '{{"event":"error","message":"rank 1: CUDA out of memory"}}'
  exit 1
fi
if [ "$mode" = "rank1-fails" ]; then exec sleep 30; fi
exit 0
"""


@pytest.fixture
def ranked_python(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "ranked-python"
    path.parent.mkdir(exist_ok=True)
    path.write_text(RANKED)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_a_job_with_two_workers_runs_two_ranks_with_the_rendezvous_variables(jobs_dir: Path, ranked_python: Path):
    _mode(ranked_python, "succeed")
    launcher = LocalLauncher(jobs_dir, python=str(ranked_python))
    spec = JobSpec(job_id="job-1", args=_spec().args, workers=2)

    await launcher.launch(spec)
    events = await _events(launcher, "job-1")

    port = json.loads((jobs_dir / "job-1" / "spec.json").read_text())["master_port"]
    assert (jobs_dir / "job-1" / "stderr.log").read_text() == f"rank 0 of 2 at 127.0.0.1:{port} local 0\n"
    assert (jobs_dir / "job-1" / "rank-1" / "stderr.log").read_text() == f"rank 1 of 2 at 127.0.0.1:{port} local 1\n"
    assert [e for e in events if isinstance(e, TrainerOutput)] == [TrainerOutput(ProgressEvent(**PROGRESS_1))]
    workers = [e for e in events if isinstance(e, WorkerState)]
    assert {(w.index, w.role) for w in workers} == {(0, "master"), (1, "worker")}
    assert {w.index for w in workers if w.state == "succeeded"} == {0, 1}
    assert events[-1] == Finished(succeeded=True, message="exit code 0")
    assert [j.state for j in await LocalLauncher(jobs_dir).list_jobs()] == ["succeeded"]


async def test_one_failed_worker_stops_the_others_and_the_job_names_it(jobs_dir: Path, ranked_python: Path):
    _mode(ranked_python, "rank1-fails")
    launcher = LocalLauncher(jobs_dir, python=str(ranked_python), cancel_grace_seconds=1)
    await launcher.launch(JobSpec(job_id="job-1", args=_spec().args, workers=3))

    events = await _events(launcher, "job-1", timeout=20)

    final = events[-1]
    assert isinstance(final, Finished) and not final.succeeded
    assert final.message.startswith("worker 1 (worker, pid ")
    assert final.message.endswith("failed: exit code 1: rank 1: CUDA out of memory")
    for rank in range(3):
        worker_dir = jobs_dir / "job-1" / ("" if rank == 0 else f"rank-{rank}")
        assert live_members(int((worker_dir / "pid").read_text())) == []  # nothing of any rank runs on
    assert [j.state for j in await LocalLauncher(jobs_dir).list_jobs()] == ["failed"]


# -- whether a worker's process group still runs --------------------------------------------------------------


def _wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_group_runs_while_its_leader_runs_or_while_a_member_outlives_it_and_not_after():
    import subprocess

    from training_controller.adapters.launchers.local_process import group_alive

    # The leader runs: the one read of its own entry answers.
    leader = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert group_alive(leader.pid)
    finally:
        leader.kill()
        leader.wait()
    assert not group_alive(leader.pid)

    # The leader ended (a zombie, not reaped yet) and left a member running: the whole of /proc is looked at.
    left = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!; exit 0"], start_new_session=True, stdout=subprocess.PIPE)
    assert left.stdout is not None
    member = int(left.stdout.readline())
    _wait_until(lambda: Path(f"/proc/{left.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
    try:
        assert group_alive(left.pid)
        os.kill(member, signal.SIGKILL)
        _wait_until(lambda: not live_members(left.pid))
        assert not group_alive(left.pid)  # only the zombie leader is left
    finally:
        left.wait()
        left.stdout.close()
