from __future__ import annotations

import csv
from pathlib import Path

from nulog.cli import main
from nulog.parse import event_id, logformat_regex, split_fields
from nulog.templates import merge_templates

from .conftest import synthetic_lines


def test_log_format_becomes_named_fields() -> None:
    headers, regex = logformat_regex(r"<Date> <Time> <Level>: <Content>")
    assert headers == ["Date", "Time", "Level", "Content"]
    m = regex.search("081109 203615 INFO: PacketResponder 1 terminating")
    assert m and m["Level"] == "INFO" and m["Content"] == "PacketResponder 1 terminating"


def test_line_not_matching_the_format_is_kept_whole_as_content() -> None:
    headers, rows = split_fields(["[x] [error] boom", "garbage line"], r"\[<Time>\] \[<Level>\] <Content>")
    assert rows[0]["Level"] == "error" and rows[0]["Content"] == "boom"
    assert rows[1] == {"Time": "", "Level": "", "Content": "garbage line"}


def test_event_id_is_a_stable_hash_of_the_template() -> None:
    assert event_id("a <*> b") == event_id("a <*> b") != event_id("a <*> c")
    assert len(event_id("x")) == 8


def test_parse_command_writes_one_row_per_line_in_order(tmp_path: Path) -> None:
    contents = synthetic_lines(150, seed=1)
    raw = [f"081109 2036{i % 60:02d} INFO dfs.DataNode: {c}" for i, c in enumerate(contents)]
    raw.insert(10, "a line without the format")
    log_file = tmp_path / "x.log"
    log_file.write_text("\n".join(raw) + "\n")
    out = tmp_path / "x.csv"
    rc = main([
        "parse", str(log_file), "--log-format", "<Date> <Time> <Level> <Component>: <Content>",
        "--k", "3", "--epochs", "3", "--output", str(out), "--device", "cpu",
    ])
    assert rc == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["LineId"] for r in rows] == [str(i) for i in range(1, len(raw) + 1)]
    assert list(rows[0]) == ["LineId", "Date", "Time", "Level", "Component", "Content", "EventId", "EventTemplate"]
    assert rows[10]["Content"] == "a line without the format" and rows[10]["Date"] == ""
    assert rows[0]["Content"] == contents[0]
    assert all(r["EventId"] == event_id(r["EventTemplate"]) for r in rows)
    assert "PacketResponder <*> for block <*> terminating" in {r["EventTemplate"] for r in rows}


def _t(s: str) -> tuple[str, ...]:
    return tuple(s.split(" "))


def test_a_slot_that_is_a_wildcard_elsewhere_becomes_a_wildcard() -> None:
    parts = [_t("generated <*> core files for <*>"), _t("generated <*> core files for /apps/sppm"), _t("x y")]
    assert merge_templates(parts) == [parts[0], parts[0], parts[2]]


def test_templates_joined_step_by_step_end_at_the_common_generalisation() -> None:
    parts = [_t("Ido chip status A <*> at Thu"), _t("Ido chip status <*> B at Thu"), _t("Ido chip status A B at <*>")]
    assert set(merge_templates(parts)) == {_t("Ido chip status <*> <*> at <*>")}


def test_mostly_variable_templates_are_not_joined() -> None:
    parts = [_t("<*>"), _t("initEnvironment"), _t("<*> <*> x"), _t("a b <*>")]
    assert merge_templates(parts) == parts


def test_templates_with_different_constants_are_not_joined() -> None:
    parts = [_t("Receiving block <*>"), _t("Received block <*>")]
    assert merge_templates(parts) == parts
