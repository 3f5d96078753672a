"""`python -m bench.peak FILE MODULE ARGS...`: run a module as `python -m MODULE ARGS...` and write its peak
RSS (MiB) to FILE when it ends.

The peak is VmHWM, the high-water mark of this process' own memory since it started. wait4's ru_maxrss is
not: Linux carries the parent's high-water mark over to a child at exec, so every command started by a
benchmark holding a million lines would seem to need as much.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> None:
    out, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        Path(out).write_text(f"{vm_hwm_mib():.1f}\n")


if __name__ == "__main__":
    main()
