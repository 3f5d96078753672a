"""The trainer contract (`nulog.protocol`) holds on both sides: what the job writes, the controller reads.

Both sides import the one module; these tests make sure neither side goes around it. Every event
round-trips; a real training job's stdout parses line by line into typed events through the launchers'
parser, and its progress reaches Opni's `modelTrainingStatus`; a field one side renames alone is refused.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nulog import protocol
from training_controller.adapters.launchers.output import parse_line
from training_controller.core.gateway import training_status
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.ports import LogLine, TrainerOutput

EVENTS = [
    protocol.StageEvent(stage="loading", message="reading 1 data file(s)"),
    protocol.ProgressEvent(epoch=2, epochs=3, step=40, steps=60, loss=0.25, percent=66.67, elapsed_s=12.5, eta_s=6.25),
    protocol.DoneEvent(metrics={"final_loss": 0.2, "lines": 100}),
    protocol.ErrorEvent(message="training failed: RuntimeError: CUDA out of memory"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.event)
def test_every_event_round_trips_through_its_line(event) -> None:
    line = protocol.encode_event(event)

    assert "\n" not in line
    assert protocol.parse_event(line) == event
    assert parse_line(line.encode()) == TrainerOutput(event)


def test_a_field_renamed_on_one_side_only_is_refused_not_read_as_zero() -> None:
    data = json.loads(protocol.encode_event(EVENTS[1]))
    data["remaining_s"] = data.pop("eta_s")  # the job renamed a field the controller still expects

    with pytest.raises(protocol.ProtocolError, match="eta_s"):
        protocol.parse_event(json.dumps(data))
    assert isinstance(parse_line(json.dumps(data)), LogLine)  # passed on as a line, with a warning


def test_lines_that_are_not_events_are_log_lines() -> None:
    for line in ("loading 5000 lines", '{"log": "json but no event"}', "[1, 2]", "{broken"):
        assert protocol.parse_event(line) is None
        assert parse_line(line) == LogLine(line)


def test_job_arguments_round_trip_through_the_command_line() -> None:
    args = protocol.JobArgs(job_id="j1", data=("/a b.gz", "s3://b/k"), output="/out", epochs=4, seed=7, device="cpu",
                   max_lines=100, k=5)

    command = args.command("python")

    assert command[:3] == ["python", "-m", "nulog.job"]
    assert protocol.JobArgs.from_argv(command[3:]) == args
    assert protocol.JobArgs.from_argv(protocol.JobArgs(job_id="j", data=("x",), output="o").to_argv()).epochs is None


def test_bad_job_arguments_name_what_is_wrong() -> None:
    with pytest.raises(protocol.ProtocolError, match="--data"):
        protocol.JobArgs.from_argv(["--job-id", "j", "--output", "o"])
    with pytest.raises(protocol.ProtocolError, match="--epochs"):
        protocol.JobArgs.from_argv(["--job-id", "j", "--data", "x", "--output", "o", "--epochs", "0"])


@pytest.mark.slow
def test_a_real_training_jobs_stdout_is_the_contract_and_feeds_the_gateways_status(tmp_path: Path) -> None:
    data = tmp_path / "windows.jsonl.gz"
    lines = [f"user {i % 7} logged in from host{i % 3}" for i in range(120)]
    with gzip.open(data, "wt") as f:
        f.write(json.dumps({"start_ts": 0, "end_ts": 1, "count": len(lines), "logs": lines}) + "\n")
    args = protocol.JobArgs(job_id="c1", data=(str(data),), output=str(tmp_path / "out"), epochs=2, device="cpu")

    done = subprocess.run(args.command(sys.executable), capture_output=True, text=True, timeout=180)

    assert done.returncode == 0, done.stderr
    events = [parse_line(line) for line in done.stdout.splitlines()]
    assert all(isinstance(e, TrainerOutput) for e in events), [e for e in events if isinstance(e, LogLine)]
    kinds = [e.event.event for e in events]
    assert kinds[0] == "stage" and "progress" in kinds and kinds[-1] == "done"
    assert events[-1].event.files == protocol.ARTIFACT_FILES
    assert all((tmp_path / "out" / name).is_file() for name in protocol.ARTIFACT_FILES)
    progress = [e.event for e in events if isinstance(e.event, protocol.ProgressEvent)]
    mid = next(p for p in progress if p.step < p.steps)
    assert mid.eta_s > 0 and mid.elapsed_s > 0 and 0 < mid.percent < 100  # the job filled them in
    record = JobRecord.new(job_id="c1", seq=1).advance(JobPhase.EXPORTING, "x").advance(JobPhase.LAUNCHING, "x")
    status = training_status(record.advance(JobPhase.RUNNING, "training").evolve(progress=mid))
    stats = status["statistics"]
    assert stats["remainingTime"] == round(mid.eta_s) and isinstance(stats["remainingTime"], int)  # int64
    assert stats["timeElapsed"] == int(mid.elapsed_s)
    assert stats["currentEpoch"] == mid.epoch and stats["percentageCompleted"] == int(mid.percent)
