"""The Opni model format: a job with `--model-format opni` writes files that Opni's own loader reads, step by
step (`opni_reference`, re-typed from rancher/opni-inference-service), and that loader's per-line scores are
the ones this project computes for the same lines."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from nulog.checkpoint import load_checkpoint
from nulog.config import OpniConfig
from nulog.opni_encoder import OpniEncoder, OpniVocab, words
from nulog.opni_model import OpniNuLog
from nulog.predict import Predictor
from nulog.protocol import MODEL_FILE, OPNI_ARTIFACT_FILES, VOCAB_FILE

from . import opni_reference as opni

USERS = [f"user{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
VERBS = ["opened", "closed", "deleted", "renamed", "copied", "moved", "locked", "shared"]
THINGS = ["report", "invoice", "photo", "backup", "notes", "draft", "ledger", "archive", "contract", "slides",
          "budget", "roadmap", "memo", "sketch", "survey", "ticket"]
PLACES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def opni_lines(n: int, *, seed: int) -> list[str]:
    """Lines of a few events over about 60 words (more than top-50), with ids and counters in them."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        event = rng.randrange(3)
        if event == 0:
            out.append(f"{rng.choice(USERS)} {rng.choice(VERBS)} {rng.choice(THINGS)} on {rng.choice(PLACES)} "
                       f"in {rng.randrange(10, 999)} ms")
        elif event == 1:
            out.append(f"Connection from 10.0.{rng.randrange(256)}.{rng.randrange(256)} to {rng.choice(PLACES)} "
                       f"closed after {rng.randrange(2)} retries")
        else:
            out.append(f"GC pause {rng.randrange(100, 999)}ms  heap {rng.choice(PLACES)} v2 ok")
    return out


def test_opni_tokens_follow_opnis_tokenizer() -> None:
    assert words("GET /api <num> took 1200ms") == ["<CLS>", "get", "/api", "<num>", "took", "<NUM>"]
    assert words("") == ["<CLS>", "<EMPTY>"]
    assert words("  two  spaces v2 ") == ["<CLS>", "two", "spaces", "v2"]  # one digit stays a word


def test_vocabulary_keeps_opnis_slots_placeholders_and_slot_5_quirk(tmp_path: Path) -> None:
    # A word holding a newline is not learned: it would take two lines of vocab.txt and shift every id after it.
    vocab = OpniVocab.learn([words("Hello world"), words("hello again trace\nline"), words("")])
    vocab.write(tmp_path / "vocab.txt")
    text = (tmp_path / "vocab.txt").read_text()
    lines = text.split("\n")
    assert text.endswith("\n") and len(lines) == 10002 + 1  # 10002 lines, each ending in a newline
    assert lines[:2] == ["10000", "8"]  # slot count, next free slot
    assert lines[2:10] == ["<PAD>", "<CLS>", "<MASK>", "<UNK>", "<NUM>", "hello", "world", "again"]
    assert lines[10] == "<TMP8>" and lines[10001] == "<TMP9999>"
    assert "<EMPTY>" not in lines  # the first word took slot 5
    tokenizer = opni.LogTokenizer(tmp_path)
    tokenizer.load_vocab()
    assert tokenizer.word2index == OpniVocab.read(tmp_path / "vocab.txt").stoi
    assert OpniEncoder(vocab).key("hello again trace\nline") == (5, 7, 3)


def test_module_has_opnis_state_dict_and_parameter_order() -> None:
    ours = OpniNuLog(OpniConfig())
    theirs = opni.make_model(10000, 10000, N=1, d_model=256, d_ff=256, dropout=0.1, max_len=64)
    ours_state, their_state = ours.state_dict(), theirs.state_dict()
    assert len(ours_state) == 52
    assert {k: v.shape for k, v in ours_state.items()} == {k: v.shape for k, v in their_state.items()}
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert torch.equal(ours_state["src_embed.1.pe"], their_state["src_embed.1.pe"])
    assert sum(p.numel() for p in ours.parameters()) == 8_746_256
    theirs.load_state_dict(ours_state)  # and the outputs of the encoder agree
    ids = torch.tensor([[1, 7, 9, 4, 3, 0, 0], [1, 5, 6, 8, 10, 11, 12]])
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.encoder(ours.src_embed(ids), ids != 0),
                                   theirs(ids, None, (ids != 0).unsqueeze(-2), None))


def test_one_pass_cls_predictions_equal_the_masked_copies() -> None:
    torch.manual_seed(0)
    model = OpniNuLog(OpniConfig(vocab_size=300))
    model.eval()
    ids = torch.randint(5, 300, (6, 20))
    ids[:, 0] = 1
    ids[2, 12:] = 0  # a shorter line, padded
    ids[4, 3] = 3
    select = (ids != 0)
    select[:, 0] = False
    with torch.no_grad():
        fast = model.masked_logits(ids, select)
        slow = model.copies_logits(ids, select)
    assert fast.shape == slow.shape == (int(select.sum()), 300)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=2e-5)


def test_a_training_step_of_the_one_pass_path_gives_the_copies_gradient() -> None:
    torch.manual_seed(0)
    model = OpniNuLog(OpniConfig(vocab_size=200))
    model.eval()  # no dropout (Opni's attention keeps 0.1 whatever make_model is given), gradients all the same
    ids = torch.randint(5, 200, (3, 9))
    ids[:, 0] = 1
    targets = torch.where(torch.arange(9) > 0, ids, -1)
    _, loss = model(ids, targets)
    loss.backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    slow_loss = torch.nn.functional.cross_entropy(model.copies_logits(ids, targets >= 0), ids[targets >= 0])
    slow_loss.backward()
    torch.testing.assert_close(loss, slow_loss)
    assert set(fast) == {n for n, p in model.named_parameters() if p.grad is not None}
    assert not any(n.startswith(("decoder.", "tgt_embed.")) for n in fast)
    for n, p in model.named_parameters():
        if n in fast:
            torch.testing.assert_close(fast[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.slow
def test_opnis_loader_reads_the_jobs_files_and_scores_lines_as_this_project_does(tmp_path: Path) -> None:
    data = tmp_path / "windows.jsonl.gz"
    with gzip.open(data, "wt") as f:
        f.write(json.dumps({"logs": opni_lines(600, seed=1)}) + "\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "nulog.job", "--job-id", "op", "--data", str(data), "--output", str(out),
         "--model-format", "opni", "--epochs", "1", "--batch-size", "8", "--device", "cpu"],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(proc.stdout.splitlines()[-1])
    assert done["event"] == "done" and tuple(done["files"]) == OPNI_ARTIFACT_FILES
    assert all((out / name).is_file() for name in OPNI_ARTIFACT_FILES)
    # The controller copies nulog_model.pt to the bucket root as nulog_model_latest.pt, beside vocab.txt.
    root = tmp_path / "bucket"
    root.mkdir()
    (root / "nulog_model_latest.pt").write_bytes((out / MODEL_FILE).read_bytes())
    (root / "vocab.txt").write_bytes((out / VOCAB_FILE).read_bytes())

    parser = opni.LogParser(root)
    assert parser.tokenizer.n_words == 10000 and len(parser.tokenizer.index2word) == 10000
    assert parser.tokenizer.index2word[5] != "<EMPTY>" and "<TMP9999>" in parser.tokenizer.word2index
    assert parser.epoch == 1 and isinstance(parser.loss, float)
    state = parser.model_opt.state_dict()
    assert state["param_groups"][0]["lr"] == 0.001 and state["param_groups"][0]["weight_decay"] == 0.005
    trained = {i for i, (n, _) in enumerate(parser.model.named_parameters()) if not n.startswith(("decoder.", "tgt_embed."))}
    assert set(state["state"]) == trained  # Adam's moments for the 21 parameters that learn
    for i, p in enumerate(parser.model.parameters()):
        if i in trained:
            assert state["state"][i]["exp_avg"].shape == p.shape

    seen = opni_lines(40, seed=1)  # lines of the training data
    fresh = opni_lines(40, seed=2)  # same events, other combinations
    odd = ["", "userq exploded zebra on mars in 12 ms", "Connection from 10.0.0.1 to echo closed after 0 retries",
           "GC GC GC GC " * 20, "v2 3 x86 userA OPENED Report"]
    lines = seen + fresh + odd
    theirs = opni.opni_scores(root, lines)
    ours = load_checkpoint(out)  # the native checkpoint
    assert ours.arch == "opni" and ours.parse.k == 50 and ours.parse.threshold == 0.7
    mine = Predictor(ours.model, ours.encoder, ours.parse).predict(lines)
    assert [r.score for r in mine] == [theirs[line] for line in lines]
    from_opni_files = load_checkpoint(root)  # Opni's files alone load here too
    assert [r.score for r in Predictor(from_opni_files.model, from_opni_files.encoder, from_opni_files.parse)
            .predict(lines)] == [theirs[line] for line in lines]
    scores = [theirs[line] for line in lines]
    assert len(set(scores)) > 3 and min(scores) < 0.7 < max(scores)  # a model that tells lines apart
    assert sum(scores[:40]) > sum(scores[80:])


def test_native_encoder_counts_lines_by_opnis_id_sequences() -> None:
    encoder, counted = OpniEncoder.fit_count(Counter({"a b 12": 2, "A B 34": 1, "c": 1}))
    assert counted == Counter({(5, 6, 4): 3, (7,): 1})
    assert encoder.key("x y") == (3, 3) and encoder.key("") == (3,)  # <EMPTY> is read as <UNK>
