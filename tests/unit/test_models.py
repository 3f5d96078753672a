"""The model archive: every trained model listed with its metrics, and an earlier one made current again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nulog.protocol import LATEST_MODEL_FILE
from tests.unit.test_runner import Harness
from training_controller.core.errors import Conflict, InvalidRequest
from training_controller.core.jobs import JobPhase


async def test_models_are_listed_most_recent_first_with_the_current_one_marked(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    first = await harness.run_one()
    await harness.store.put_bytes("opni-nulog-models-archive", f"{first.job_id}/metrics.json", json.dumps({"final_loss": 0.3}).encode())
    second = await harness.run_one()

    models = await harness.controller.list_models()

    assert [m.job_id for m in models] == [second.job_id, first.job_id]
    assert [m.current for m in models] == [True, False]
    assert models[1].metrics == {"final_loss": 0.3} and models[1].log_count == first.log_count


async def test_promoting_an_earlier_model_makes_it_current_and_announces_it(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    first = await harness.run_one()
    await harness.run_one()
    announced = len(harness.events.of("model_ready"))

    promoted = await harness.controller.promote_model(first.job_id)

    assert promoted.current and promoted.job_id == first.job_id
    latest = await harness.store.get_bytes("opni-nulog-models", LATEST_MODEL_FILE)
    assert latest == harness.launcher.model_bytes[first.job_id]
    assert harness.events.of("model_ready")[announced:] == [{
        "bucket": "opni-nulog-models", "model_file": LATEST_MODEL_FILE, "vocab_file": "vocab.txt", "job_id": first.job_id,
    }]
    assert [m.job_id for m in await harness.controller.list_models() if m.current] == [first.job_id]


async def test_a_job_without_a_model_cannot_be_promoted(tmp_path: Path) -> None:
    harness = Harness(tmp_path, mode="fail")
    failed = await harness.run_one()

    with pytest.raises(InvalidRequest, match=f"job {failed.job_id} trained no model"):
        await harness.controller.promote_model(failed.job_id)


async def test_no_promotion_while_a_training_runs(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    done = await harness.run_one()
    busy = await harness.submit()
    await harness.state.save_job(busy.advance(JobPhase.EXPORTING, "x").advance(JobPhase.LAUNCHING, "x"))

    with pytest.raises(Conflict, match=f"job {busy.job_id} is training"):
        await harness.controller.promote_model(done.job_id)
