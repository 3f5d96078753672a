"""The controller SIGKILLed in each phase of a job and started again; a trainer killed under it.

The trainer runs in a process of its own, so it outlives a controller that dies: the restarted controller
takes the job up where it stood, holds the GPU again before it answers anyone, and settles what the dead
one left. Every scenario ends with `Rig.assert_invariants`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import train_payload
from tests.faults.conftest import LONG_EPOCHS, MakeRig
from tests.faults.harness import Rig

pytestmark = [pytest.mark.slow, pytest.mark.faults]


async def phase_of(rig: Rig, index: int = 0) -> str:
    return (await rig.jobs())[index]["phase"]


async def wait_phase(rig: Rig, phase: str, index: int = 0, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (current := await phase_of(rig, index) if len(await rig.jobs()) > index else "") != phase:
        assert time.monotonic() < deadline, f"job {index} is {current!r}, not {phase!r}"
        await asyncio.sleep(0.1)


async def restart(rig: Rig) -> None:
    rig.controller.kill()
    rig.controller.start()
    await rig.wait_ready()


async def test_killed_while_its_trainer_runs_the_gpu_stays_taken_until_the_training_ends(make_rig: MakeRig) -> None:
    rig = await make_rig(epochs=LONG_EPOCHS)
    rig.start_sampling()  # from before the kill: the restarted controller's very first answers are seen
    await rig.train(train_payload(40))
    await rig.wait_training()
    assert await rig.gpu_answer() == "NO"

    rig.controller.kill()
    assert rig.trainer_running()  # the trainer outlives its controller
    rig.controller.start()
    await rig.wait_ready()
    assert rig.trainer_running(), f"the training ended before the controller was back: raise LONG_EPOCHS ({LONG_EPOCHS})"
    answered_while_training = [s.answer for s in rig.samples if s.trainer_before and s.trainer_after]

    jobs = await rig.wait_jobs(1)
    assert answered_while_training and set(answered_while_training) == {"NO"}
    await rig.assert_invariants(jobs, succeeded=1)
    assert (await rig.announcements()).count(("gpu_trainingjob_status", b"JobStart")) == 1


async def test_killed_with_one_job_running_and_one_queued_both_train_once_in_order(make_rig: MakeRig) -> None:
    rig = await make_rig(epochs=LONG_EPOCHS)
    await rig.train(train_payload(50))
    await rig.wait_training()
    await rig.train(train_payload(20))
    await wait_phase(rig, "queued", index=1)

    await restart(rig)
    rig.start_sampling()

    jobs = await rig.wait_jobs(2, timeout=400)
    await rig.assert_invariants(jobs, succeeded=2)
    assert jobs[0]["finished_at"] < jobs[1]["finished_at"]


async def test_killed_while_exporting_from_a_hung_log_source_the_job_is_exported_again(
    make_rig: MakeRig, sample_logs: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    shutil.copytree(sample_logs, logs)
    hung = logs / "zz-hung.jsonl"
    os.mkfifo(hung)  # opening it for reading blocks: a backend that never answers
    rig = await make_rig(logs=logs)
    await rig.train(train_payload(40))
    await wait_phase(rig, "exporting")
    await asyncio.sleep(1)
    assert await phase_of(rig) == "exporting"

    rig.controller.kill()
    hung.unlink()  # the backend is back
    rig.controller.start()
    await rig.wait_ready()
    rig.start_sampling()

    jobs = await rig.wait_jobs(1)
    await rig.assert_invariants(jobs, succeeded=1)
    assert [h["phase"] for h in jobs[0]["history"]] == ["queued", "exporting", "launching", "running", "succeeded"]


async def test_killed_while_launching_behind_an_external_trainer_the_job_waits_then_trains(make_rig: MakeRig) -> None:
    rig = await make_rig()
    await rig.nc.publish("gpu_trainingjob_status", b"JobStart")  # an external trainer takes the GPU
    await rig.nc.flush()
    await rig.train(train_payload(40))
    await wait_phase(rig, "launching")

    await restart(rig)
    assert await rig.gpu_answer() == "NO"  # the external claim is stored state too
    assert await phase_of(rig) == "launching"
    rig.start_sampling()
    await rig.nc.publish("gpu_trainingjob_status", b"JobEnd")
    await rig.nc.flush()

    jobs = await rig.wait_jobs(1)
    await rig.assert_invariants(jobs, succeeded=1)


async def test_killed_after_its_trainer_finished_the_model_is_published_once(make_rig: MakeRig) -> None:
    rig = await make_rig()
    await rig.train(train_payload(40))
    job_id = await rig.wait_training()
    rig.pause_nats()  # the controller cannot record the end now
    try:
        deadline = time.monotonic() + 120
        while not (rig.jobs_dir / job_id / "exit_code").exists():
            assert time.monotonic() < deadline, "the trainer did not finish"
            await asyncio.sleep(0.1)
        rig.controller.kill()
    finally:
        rig.resume_nats()
    rig.controller.start()
    await rig.wait_ready()

    jobs = await rig.wait_jobs(1)
    seen = await rig.assert_invariants(jobs, succeeded=1)
    assert [name for name, _ in seen if name == "model_ready"] == ["model_ready"]


async def test_a_trainer_killed_fails_its_job_with_the_reason_and_the_next_train_works(make_rig: MakeRig) -> None:
    rig = await make_rig(epochs=LONG_EPOCHS)
    rig.start_sampling()
    await rig.train(train_payload(40))
    job_id = await rig.wait_training()

    rig.kill_trainer(job_id)

    jobs = await rig.wait_jobs(1)
    assert jobs[0]["phase"] == "failed" and "exit code 137" in jobs[0]["message"], jobs[0]["message"]
    await rig.assert_invariants(jobs, succeeded=0)
    await rig.assert_a_new_train_works(train_payload(20), before=1)
