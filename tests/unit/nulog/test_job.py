from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nulog.checkpoint import load_checkpoint, save_checkpoint
from nulog.protocol import CHECKPOINT_FILE, JobArgs, ProtocolError

from .conftest import synthetic_lines, train_small


def run_job(*args: str) -> tuple[int, list[dict], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "nulog.job", *args], capture_output=True, text=True, timeout=120
    )
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # every stdout line must be JSON
    return proc.returncode, events, proc.stderr


@pytest.fixture
def windows_file(tmp_path: Path) -> Path:
    path = tmp_path / "windows.jsonl.gz"
    lines = synthetic_lines(240, seed=2)
    with gzip.open(path, "wt") as f:
        for i in range(0, len(lines), 40):
            f.write(json.dumps({"start_ts": i, "end_ts": i + 1, "count": 40, "logs": lines[i : i + 40]}) + "\n")
    return path


@pytest.mark.slow
def test_job_emits_json_events_and_writes_the_three_files(windows_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, events, stderr = run_job(
        "--job-id", "j1", "--data", str(windows_file), "--output", str(out), "--epochs", "2", "--device", "cpu",
        "--max-lines", "200", "--k", "5",
    )
    assert rc == 0, stderr
    assert [e["stage"] for e in events if e["event"] == "stage"] == ["loading", "training", "saving"]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["percent"] == 100.0 and progress[-1]["step"] == progress[-1]["steps"]
    assert {e["epoch"] for e in progress} >= {1, 2}
    for e in progress:
        assert set(e) == {"event", "stage", "epoch", "epochs", "step", "steps", "loss", "percent", "elapsed_s", "eta_s"}
    done = events[-1]
    assert done["event"] == "done"
    assert done["files"] == ["nulog_model.pt", "vocab.txt", "metrics.json"]
    assert all((out / name).is_file() for name in done["files"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["lines"] == 200 and metrics["epochs"] == 2 and metrics["device"] == "cpu"
    assert done["metrics"] == metrics
    assert load_checkpoint(out).parse.k == 5


def test_job_without_usable_input_reports_an_error_and_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc, events, _ = run_job("--job-id", "j2", "--data", str(empty), "--output", str(tmp_path / "o"))
    assert rc == 2
    assert events[-1]["event"] == "error" and "no log lines" in events[-1]["message"]
    assert not (tmp_path / "o").exists()


def test_job_with_bad_arguments_reports_an_error_and_exits_2(tmp_path: Path) -> None:
    rc, events, _ = run_job("--job-id", "j3", "--output", str(tmp_path))
    assert rc == 2
    assert events == [{"event": "error", "message": events[0]["message"]}]
    assert "--data" in events[0]["message"]


def test_job_with_missing_data_file_names_it(tmp_path: Path) -> None:
    rc, events, _ = run_job("--job-id", "j4", "--data", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path))
    assert rc == 2 and "nope.jsonl" in events[-1]["message"]


def test_new_job_arguments_round_trip_and_are_bounded() -> None:
    args = JobArgs(job_id="j", data=("d",), output="o", batch_size=64, model_format="opni", checkpoint="s3://b/j/ckpt",
                   checkpoint_every_s=60, rendezvous_timeout_s=120, peer_timeout_s=15)
    assert JobArgs.from_argv(args.to_argv()) == args
    base = ["--job-id", "j", "--data", "d", "--output", "o"]
    for flag, value in (("--batch-size", "0"), ("--batch-size", "100000"), ("--checkpoint-every-s", "0.5"),
                        ("--peer-timeout-s", "1"), ("--rendezvous-timeout-s", "0"), ("--epochs", "100000"),
                        ("--model-format", "drain"), ("--k", "0"), ("--seed", "-1")):
        with pytest.raises(ProtocolError, match=flag):
            JobArgs.from_argv([*base, flag, value])


def test_job_refuses_to_resume_a_checkpoint_of_another_training(windows_file: Path, tmp_path: Path) -> None:
    other = train_small(synthetic_lines(50, seed=9), epochs=1, min_steps=3)
    (tmp_path / "ckpt").mkdir()
    save_checkpoint(tmp_path / "ckpt" / CHECKPOINT_FILE, other.checkpoint)
    rc, events, _ = run_job("--job-id", "j5", "--data", str(windows_file), "--output", str(tmp_path / "o"),
                            "--device", "cpu", "--checkpoint", str(tmp_path / "ckpt"))
    assert rc == 2
    assert events[-1]["event"] == "error" and "another training" in events[-1]["message"]
    assert not (tmp_path / "o").exists()
