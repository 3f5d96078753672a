"""One training across several workers (torch.distributed, gloo on CPU), as the job runs it: N plain processes
with the rendezvous variables, or torchrun; a rank that dies or fails, and a job that resumes."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nulog.checkpoint import load_checkpoint
from nulog.distributed import Rendezvous, RendezvousError
from nulog.protocol import ARTIFACT_FILES, CHECKPOINT_FILE, DEFAULT_MASTER_PORT

from .conftest import synthetic_lines

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """What a launcher sets for each of N plain processes."""
    return {**os.environ, "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]  # every stdout line is an event


@pytest.fixture
def windows(tmp_path: Path) -> Path:
    path = tmp_path / "windows.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"logs": synthetic_lines(300, seed=4)}) + "\n")
    return path


def job_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--job-id", "d1", "--data", str(data), "--output", str(out), "--device", "cpu", "--peer-timeout-s", "10",
            "--rendezvous-timeout-s", "60", *extra]


def start_ranks(argv: list[str], world: int = 2) -> list[subprocess.Popen]:
    port = free_port()
    return [subprocess.Popen([sys.executable, "-m", "nulog.job", *argv], env=rank_env(r, world, port), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for r in range(world)]


def wait_for(proc: subprocess.Popen, what: str) -> None:
    """Read proc's events until one holds `what`."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if what in line:
            return
    raise AssertionError(f"the job ended before printing {what}")


# -- the rendezvous variables --


def test_rendezvous_reads_torchruns_variables() -> None:
    rdv = Rendezvous.from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h0",
                               "MASTER_PORT": "1234", "TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert (rdv.world_size, rdv.rank, rdv.local_rank, rdv.master_addr, rdv.master_port, rdv.agent_store) == \
        (4, 2, 0, "h0", 1234, True)


def test_an_indexed_jobs_completion_index_is_the_rank_and_the_port_has_a_default() -> None:
    rdv = Rendezvous.from_env({"WORLD_SIZE": "3", "JOB_COMPLETION_INDEX": "1", "MASTER_ADDR": "nulog-train-j-0.nulog-train-j"})
    assert (rdv.rank, rdv.local_rank, rdv.master_port, rdv.agent_store) == (1, 0, DEFAULT_MASTER_PORT, False)
    assert Rendezvous.from_env({}) == Rendezvous()  # no variables: one process alone


@pytest.mark.parametrize(("env", "named"), [
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "RANK"),
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "h"}, "not within WORLD_SIZE 2"),
    ({"WORLD_SIZE": "2", "RANK": "1"}, "MASTER_ADDR"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "70000"}, "MASTER_PORT"),
])
def test_wrong_rendezvous_variables_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(RendezvousError, match=named):
        Rendezvous.from_env(env)


# -- (a) one worker and two train the same model --


@pytest.mark.slow
def test_one_worker_and_two_with_the_same_global_batch_train_the_same_parameters(tmp_path: Path) -> None:
    """Within float tolerance: a step's gradient is the same sum, only the order of its float additions
    differs (each rank sums its share, then the ranks are summed), about 1e-7 relative per step, so after 40
    Adam steps the weights agree to 1e-5 and the logits to 1e-4. One exception: the key bias of attention
    has a gradient of exactly zero in exact arithmetic (softmax does not change when one constant is added
    to every score), so Adam scales what is left, float noise, up to full learning-rate steps that differ
    between any two summation orders; it changes no output, so it is compared through the logits only."""
    port = free_port()
    worker = [sys.executable, "-m", "tests.unit.nulog.ddp_worker"]
    one = subprocess.Popen([*worker, str(tmp_path / "one.pt")], cwd=REPO, env={**os.environ, "WORLD_SIZE": "1"})
    two = [subprocess.Popen([*worker, str(tmp_path / "two.pt")], cwd=REPO, env=rank_env(r, 2, port)) for r in (0, 1)]
    assert [p.wait(timeout=120) for p in (one, *two)] == [0, 0, 0]

    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert a["steps"] == b["steps"] == 40
    C = a["state"]["blocks.0.attn.qkv.bias"].numel() // 3
    for name, value in a["state"].items():
        other = b["state"][name]
        if name == "blocks.0.attn.qkv.bias":
            value, other = torch.cat([value[:C], value[2 * C:]]), torch.cat([other[:C], other[2 * C:]])
        torch.testing.assert_close(other, value, atol=1e-5, rtol=1e-4, msg=name)
    torch.testing.assert_close(b["logits"], a["logits"], atol=1e-4, rtol=1e-4)


# -- the job on two workers --


@pytest.mark.slow
def test_torchrun_runs_the_job_on_two_workers_and_rank_0_alone_writes_and_reports(windows: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "-m", "nulog.job",
                           *job_argv(windows, out, "--epochs", "1", "--batch-size", "32")],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = events(proc.stdout)  # both ranks write to torchrun's stdout
    done = [e for e in seen if e["event"] == "done"]
    assert len(done) == 1 and done[0]["metrics"]["workers"] == 2 and done[0]["metrics"]["batch_size"] == 32
    assert all((out / name).is_file() for name in ARTIFACT_FILES)
    by_rank = {r: [e for e in seen if e.get("message", "").startswith(f"rank {r}: ")] for r in (0, 1)}
    assert {e["stage"] for e in by_rank[1]} == {"joining", "loading", "training", "done"}
    assert "saving" in {e["stage"] for e in by_rank[0]}
    assert all(e["event"] == "stage" for e in by_rank[1])  # rank 1: stage events only, no progress
    assert [e for e in seen if e["event"] == "progress"]
    assert load_checkpoint(out).step == done[0]["metrics"]["steps"]


# -- (b) a rank that dies or fails --


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
def test_a_rank_killed_mid_training_makes_the_other_fail_promptly_naming_it(windows: Path, tmp_path: Path,
                                                                           victim: int) -> None:
    ranks = start_ranks(job_argv(windows, tmp_path / "out", "--epochs", "1000"))
    try:
        wait_for(ranks[0], '"progress"')
        ranks[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        survivor = ranks[1 - victim]
        rest, _ = survivor.communicate(timeout=30)
        took = time.monotonic() - killed_at
    finally:
        for p in ranks:
            p.kill()
            p.wait()
    assert ranks[victim].returncode == -signal.SIGKILL
    assert survivor.returncode == 1 and took < 10
    error = events(rest)[-1]
    assert error["event"] == "error"
    assert error["message"].startswith(f"rank {1 - victim}: training failed: ")
    assert f"rank {victim} " in error["message"].removeprefix(f"rank {1 - victim}: ")  # names the dead rank
    assert not (tmp_path / "out" / "nulog_model.pt").exists()


@pytest.mark.slow
def test_a_rank_that_fails_makes_the_others_fail_with_its_reason(windows: Path, tmp_path: Path) -> None:
    port = free_port()
    argv = job_argv(windows, tmp_path / "out", "--epochs", "1")
    bad = [a if a != str(windows) else str(tmp_path / "missing.jsonl.gz") for a in argv]
    ranks = [subprocess.Popen([sys.executable, "-m", "nulog.job", *args], env=rank_env(r, 2, port), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for r, args in ((0, argv), (1, bad))]
    outs = [p.communicate(timeout=60)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [1, 2]
    assert events(outs[1])[-1]["message"] == f"rank 1: data file {tmp_path / 'missing.jsonl.gz'} does not exist"
    assert events(outs[0])[-1] == {"event": "error", "message": f"rank 0: training failed: rank 1 failed: data file "
                                                                 f"{tmp_path / 'missing.jsonl.gz'} does not exist"}


# -- (c) resuming from a checkpoint --


@pytest.mark.slow
def test_a_job_killed_mid_training_resumes_from_its_last_checkpoint(windows: Path, tmp_path: Path) -> None:
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    argv = job_argv(windows, out, "--epochs", "2", "--checkpoint", str(ckpt), "--checkpoint-every-s", "1")
    ranks = start_ranks(argv)
    try:
        deadline = time.monotonic() + 60
        while not (ckpt / CHECKPOINT_FILE).is_file():
            assert time.monotonic() < deadline and all(p.poll() is None for p in ranks), "no checkpoint written"
            time.sleep(0.05)
    finally:
        for p in ranks:  # the whole job goes, as when its pods are deleted
            p.kill()
            p.wait()
    saved = load_checkpoint(ckpt / CHECKPOINT_FILE).step
    assert saved > 0 and not out.exists()

    again = start_ranks(argv)
    outs = [p.communicate(timeout=120)[0] for p in again]
    assert [p.returncode for p in again] == [0, 0]
    seen = [events(o) for o in outs]
    for r in (0, 1):
        resumed = [e for e in seen[r] if e.get("stage") == "resuming"]
        assert len(resumed) == 1 and f"from step {saved} " in resumed[0]["message"]
    done = seen[0][-1]
    assert done["event"] == "done" and done["metrics"]["resumed_from_step"] == saved
    assert done["metrics"]["steps"] > saved
    assert all((out / name).is_file() for name in ARTIFACT_FILES)
    progress = [e for e in seen[0] if e["event"] == "progress"]
    assert progress[0]["step"] > saved and progress[-1]["step"] == done["metrics"]["steps"]
