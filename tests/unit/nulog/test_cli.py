from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from nulog.checkpoint import save_checkpoint
from nulog.cli import main
from nulog.train import TrainResult


@pytest.fixture
def model_dir(trained: TrainResult, tmp_path: Path) -> Path:
    save_checkpoint(tmp_path / "nulog_model_latest.pt", trained.checkpoint)
    return tmp_path


def test_templates_reads_stdin_and_writes_one_json_line_per_line(
    model_dir: Path, corpus: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(corpus[:5]) + "\n"))
    assert main(["templates", "--model", str(model_dir), "-"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["log"] for r in rows] == corpus[:5]
    assert all("<*>" in r["template"] for r in rows)


def test_score_writes_score_and_label_per_line(
    model_dir: Path, corpus: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"log": corpus[0]}) + "\n" + json.dumps({"log": "never seen words only"}) + "\n")
    assert main(["score", "--model", str(model_dir / "nulog_model_latest.pt"), str(inp)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["Normal", "Anomaly"]
    assert rows[0]["score"] > rows[1]["score"]


def test_train_writes_latest_model_and_vocab(corpus: list[str], tmp_path: Path) -> None:
    inp = tmp_path / "logs.txt"
    inp.write_text("\n".join(corpus[:60]) + "\n")
    out = tmp_path / "model"
    assert main(["train", str(inp), "--output", str(out), "--epochs", "1", "--device", "cpu"]) == 0
    assert (out / "nulog_model_latest.pt").is_file() and (out / "vocab.txt").is_file()


def test_templates_with_a_missing_model_exits_2(tmp_path: Path) -> None:
    assert main(["templates", "--model", str(tmp_path / "none"), "-"]) == 2
