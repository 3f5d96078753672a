"""The processes of this machine, read from /proc: how tests that start and kill trainers see what still runs."""

from __future__ import annotations

from pathlib import Path


def processes() -> list[tuple[int, int]]:
    """(pid, process group) of every live process; zombies are left out."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while the directory was listed
            continue
        if fields[0] != "Z":
            found.append((int(stat.parent.name), int(fields[2])))
    return found


def live_members(pgid: int) -> list[int]:
    """The pids of process group `pgid` that are not zombies."""
    return [pid for pid, group in processes() if group == pgid]
