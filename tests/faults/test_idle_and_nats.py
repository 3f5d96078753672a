"""The controller left idle, and NATS killed, restarted and paused under it, while idle and while it trains.

Every scenario ends with the same checks (`Rig.assert_invariants`): each accepted request trained exactly
once, JobStart and JobEnd balance, model_ready once per success, gpu_service_inference never YES while a
trainer runs and YES afterwards, /healthz 200; and a new `train` afterwards works.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import train_payload
from tests.faults.conftest import LONG_EPOCHS, MakeRig

pytestmark = [pytest.mark.slow, pytest.mark.faults]


async def test_a_train_published_after_the_consumer_idled_through_many_fetch_timeouts_becomes_a_job(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig()  # NATS_FETCH_TIMEOUT_SECONDS=0.5: 16 empty fetches in 8 s
    await asyncio.sleep(8)
    status, health = await rig.controller.http("/healthz")
    assert status == 200, health

    await rig.train(train_payload(40))
    jobs = await rig.wait_jobs(1, timeout=180)

    await rig.assert_invariants(jobs, succeeded=1)
    await rig.assert_a_new_train_works(train_payload(20), before=1)


async def test_nats_restarted_while_the_controller_idles_then_a_train_becomes_a_job(make_rig: MakeRig) -> None:
    rig = await make_rig()
    rig.kill_nats()
    await asyncio.sleep(3)
    rig.restart_nats()
    await rig.wait_client_connected()
    await rig.wait_ready()
    await asyncio.sleep(2)  # several fetches against the restarted server

    await rig.train(train_payload(40))
    jobs = await rig.wait_jobs(1, timeout=180)

    await rig.assert_invariants(jobs, succeeded=1)


@pytest.mark.parametrize("outage_seconds", [3, 30], ids=["shorter-than-a-request-timeout", "30s"])
async def test_nats_killed_during_a_training_and_restarted_the_job_succeeds_once(
    make_rig: MakeRig, outage_seconds: int
) -> None:
    rig = await make_rig(epochs=LONG_EPOCHS)
    rig.start_sampling()
    await rig.train(train_payload(40))
    await rig.wait_training()

    rig.kill_nats()
    await asyncio.sleep(outage_seconds)
    rig.restart_nats()
    await rig.wait_client_connected()

    jobs = await rig.wait_jobs(1, timeout=300)
    await rig.assert_invariants(jobs, succeeded=1)
    await rig.assert_a_new_train_works(train_payload(20), before=1)


async def test_nats_paused_for_30s_during_a_training_the_job_succeeds_once(make_rig: MakeRig) -> None:
    rig = await make_rig(epochs=LONG_EPOCHS)
    rig.start_sampling()
    await rig.train(train_payload(40))
    await rig.wait_training()

    rig.pause_nats()
    try:
        await asyncio.sleep(30)
    finally:
        rig.resume_nats()

    jobs = await rig.wait_jobs(1, timeout=300)
    await rig.assert_invariants(jobs, succeeded=1)
    await rig.assert_a_new_train_works(train_payload(20), before=1)
