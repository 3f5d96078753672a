"""`training-controller demo`, exactly as `make demo` runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def test_demo_trains_a_model_shows_templates_and_leaves_no_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training_controller", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout

    ready_line = out.split("model_ready payload:\n", 1)[1].splitlines()[0]
    ready = json.loads(ready_line)
    assert ready["bucket"] == "opni-nulog-models"
    assert ready["bucket_files"] == {"model_file": "nulog_model_latest.pt", "vocab_file": "vocab.txt"}
    assert '"phase": "succeeded"' in out
    assert "queued -> exporting -> launching -> running -> succeeded" in out
    assert "order: JobStart, model_ready, JobEnd" in out
    assert re.search(r"epoch \d+/\d+ .* loss \d", out)
    templates = re.findall(r"template: (.*)", out)
    assert len(templates) >= 3 and all(t.strip() for t in templates)
    assert any("<*>" in t or "<NUM>" in t or "<IP>" in t for t in templates)

    assert processes_mentioning(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []  # the demo removed its temporary directory


def test_demo_interrupted_while_training_stops_everything_it_started(tmp_path: Path) -> None:
    # Enough epochs that the training is still running when the first progress line has been read, however
    # slowly this test is scheduled.
    proc = subprocess.Popen(
        [sys.executable, "-m", "training_controller", "demo", "--workdir", str(tmp_path), "--epochs", "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # As in a terminal: Ctrl-C raises KeyboardInterrupt (a background shell would have SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if re.search(r"epoch \d+/\d+", line):  # the training process is running now
            break
    running = processes_mentioning(str(tmp_path))
    if not running:
        rest, _ = proc.communicate(timeout=60)
        pytest.fail(f"the demo's processes were gone (exit {proc.returncode}) after:\n" + "".join(seen) + rest)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "demo interrupted; stopping everything it started" in rest
    assert processes_mentioning(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []
