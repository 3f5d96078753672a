from __future__ import annotations

import gzip
import json
from pathlib import Path

from nulog.data import read_lines


def test_windows_records_and_plain_lines_are_detected_per_line(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps({"start_ts": 1, "end_ts": 2, "count": 2, "logs": ["a <NUM>", "b <IP>"]}) + "\n"
        + json.dumps({"log": "c line", "namespace_name": "x"}) + "\n"
        + "plain text line\n"
        + "{not json at all\n"
        + "\n"
    )
    assert list(read_lines([path])) == ["a <NUM>", "b <IP>", "c line", "plain text line", "{not json at all"]


def test_gzipped_windows_file_is_read_by_extension(tmp_path: Path) -> None:
    path = tmp_path / "windows.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(3):
            f.write(json.dumps({"start_ts": i, "end_ts": i + 1, "count": 1, "logs": [f"line {i}"]}) + "\n")
    assert list(read_lines([path])) == ["line 0", "line 1", "line 2"]
