"""With TRAIN_MODEL_FORMAT=opni the controller publishes what Opni's inference service loads: the test reads the
models bucket root as that service does, with its loader re-typed step by step (tests/unit/nulog/opni_reference.py:
rancher/opni-inference-service `opni_inference_service/models/opnilog/opnilog_tokenizer.py`@0b1cbd56,
`opnilog_model.py`@6d10c147, `opnilog_parser.py`@f75ef4c8, `opnilog_predictor.py`@6ddff684), and gets the
predictions this project computes: from the native checkpoint in the archive, and from the inference worker."""

from __future__ import annotations

import json
from pathlib import Path

import nats
import pytest

from nulog.checkpoint import load_checkpoint
from nulog.predict import Predictor
from nulog.protocol import NATIVE_MODEL_FILE
from tests.conftest import StartService, interval, listen, request_json, wait_until
from tests.unit.nulog import opni_reference as opni

pytestmark = pytest.mark.slow


def sample_lines(logs: Path, per_file: int = 10) -> list[str]:
    return [json.loads(line)["log"] for path in sorted(logs.glob("*.jsonl")) for line in path.read_text().splitlines()[:per_file]]


async def test_the_published_opni_files_load_in_opnis_loader_and_predict_what_this_project_predicts(
    nc: nats.NATS, start_service: StartService, sample_logs: Path, tmp_path: Path
) -> None:
    await start_service(logs=sample_logs, train_model_format="opni", train_max_lines=400, train_epochs=1)
    rec = await listen(nc, ("model_ready", "gpu_trainingjob_status"))

    reply = await request_json(nc, "train", {"model_to_train": "nulog", "time_intervals": [interval(30)]})
    await rec.wait_for_job_ends(1, timeout=240)
    record = await request_json(nc, "training_status", {"job_id": reply["job_id"]})
    assert record["phase"] == "succeeded", record["message"]
    assert record["parameters"]["model_format"] == "opni"
    assert rec.payloads("model_ready")[0]["bucket_files"] == {"model_file": "nulog_model_latest.pt", "vocab_file": "vocab.txt"}

    root = tmp_path / "store" / "opni-nulog-models"
    assert sorted(p.name for p in root.iterdir()) == ["nulog_model_latest.pt", "vocab.txt"]
    parser = opni.LogParser(root)  # Opni's init_model: load_vocab, then Adam and load_model
    assert parser.tokenizer.n_words == 10000 and parser.epoch == 1

    lines = sample_lines(sample_logs) + ["", "a line this model has never seen, 42 times"]
    theirs = opni.opni_scores(root, lines)

    native = load_checkpoint(tmp_path / "store" / "opni-nulog-models-archive" / reply["job_id"] / NATIVE_MODEL_FILE)
    assert native.arch == "opni"
    ours = Predictor(native.model, native.encoder, native.parse).predict(lines)
    assert [r.score for r in ours] == [theirs[line] for line in lines]

    async def worker_has_the_model() -> bool:
        answer = json.loads((await nc.request("nulog_predict", json.dumps({"logs": lines[:1]}).encode(), timeout=30)).data)
        return "predictions" in answer

    await wait_until(worker_has_the_model, timeout=60, what="the inference worker to load the Opni files")
    answer = json.loads((await nc.request("nulog_predict", json.dumps({"logs": lines}).encode(), timeout=60)).data)
    # The worker masks raw lines as the controller's export does; Opni's service gets them masked already.
    masked = [p["masked"] for p in answer["predictions"]]
    assert masked != lines
    theirs_masked = opni.opni_scores(root, masked)
    assert [p["score"] for p in answer["predictions"]] == [round(theirs_masked[line], 6) for line in masked]  # as it rounds
