"""The controller must run where torch is not installed: only the training job needs it."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib, pkgutil, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError, as on a machine without torch
import training_controller
names = [m.name for m in pkgutil.walk_packages(training_controller.__path__, "training_controller.")]
for name in names:
    if name != "training_controller.__main__":
        importlib.import_module(name)
print(len(names))
"""


def test_every_controller_module_imports_without_torch() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 20  # the walk really found the package's modules
