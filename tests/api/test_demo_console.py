"""`training-controller demo --console`: the embedded stack stays up with the console until Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_demo import processes_mentioning

pytestmark = pytest.mark.slow


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_demo_console_serves_the_console_with_its_token_until_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "training_controller", "demo", "--console", "--epochs", "1", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("   REST API:"):
                break
        out = "".join(seen)
        assert "== 8. the web console, until Ctrl-C" in out, out[-3000:]
        url = re.findall(r"web console: (http://\S+)", out)[-1]
        token = re.findall(r"token: +(\S+)", out)[-1]
        status, page = get(url)
        assert status == 200 and "console.js" in page
        assert get(url + "api/v1/models")[0] == 401
        status, body = get(url + "api/v1/trainings?state=completed", token)
        assert status == 200 and len(json.loads(body)["items"]) == 1
        assert proc.poll() is None  # still serving after the training
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(seen)[-2000:] + rest
    assert "stopping the demo's stack" in rest
    assert processes_mentioning(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []
