"""Masking: variable values become placeholders, words stay, and masking twice changes nothing."""

from __future__ import annotations

import pytest

from training_controller.core.masking import mask

CASES = [
    ("connect to 10.0.0.12 failed", "connect to <IP> failed"),
    ("upstream 192.168.1.1:8080 closed", "upstream <IP> closed"),
    ("request 123e4567-e89b-12d3-a456-426614174000 done", "request <UUID> done"),
    ("GET https://example.com/api/v1/items?id=7 200", "GET <URL> <NUM>"),
    ("mail sent to bob.smith+x@example.org now", "mail sent to <EMAIL> now"),
    ("at 2021-03-29T17:36:02.123Z ok", "at <TIMESTAMP> ok"),
    ("at 2021-03-29 17:36:02,5+02:00 ok", "at <TIMESTAMP> ok"),
    ("at 2021-03-29 17:36:02 UTC ok", "at <TIMESTAMP> ok"),
    ('10.1.2.3 - - [29/Mar/2021:17:36:02 +0000] "GET / HTTP/1.1"', '<IP> - - [<TIMESTAMP>] "GET / HTTP/<NUM>"'),
    ("rotated on 2021-03-29", "rotated on <DATE>"),
    ("tick 17:36:02.250 done", "tick <TIME> done"),
    ("block 0xDEADbeef written", "block <HEX> written"),
    ("container 3f2a9c1b7d4e started", "container <HEX> started"),
    ("query took 3.1ms", "query took <DURATION>"),
    ("retry in 5s then 2h", "retry in <DURATION> then <DURATION>"),
    ("read 4096 bytes", "read <NUM> bytes"),
    ("offset -12 scale 0.75", "offset <NUM> scale <NUM>"),
    ("status=503 count:7", "status=<NUM> count:<NUM>"),
    ("pid[1234]", "pid[<NUM>]"),
]


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_variable_values_are_replaced_by_placeholders(line: str, expected: str):
    assert mask(line) == expected


def test_url_is_masked_whole_not_taken_apart_into_ip_and_numbers():
    assert mask("call http://10.0.0.1:9200/logs/_search?size=100 ok") == "call <URL> ok"


def test_email_is_masked_whole():
    assert mask("from ops-42@mail.example.com") == "from <EMAIL>"


@pytest.mark.parametrize("word", ["v1", "utf8", "blk_123", "sha256", "ipv4", "x86_64", "h2", "k8s", "e5"])
def test_words_that_contain_digits_are_kept(word: str):
    assert mask(f"using {word} here") == f"using {word} here"


@pytest.mark.parametrize(
    "line",
    [
        "Starting the server",
        "GET /healthz HTTP",
        "deadbeef cafe facade",  # hex letters without a digit are words
        "user admin logged in",
        "<NUM> <IP> <UUID>",  # placeholders themselves
    ],
)
def test_ordinary_words_are_kept(line: str):
    assert mask(line) == line


@pytest.mark.parametrize(
    "line",
    [line for line, _ in CASES]
    + [
        "10.0.0.1:80 10.0.0.1 1.2.3 1.2.3.4.5 v1.2.3",
        "2021-03-29T17:36:02Z 17:36:02 3.1ms 0x1f 42 -42 +4.2",
        "id=deadbeef12,ts=1617040800123456789;took=12ms/",
        "a@b.co http://x.y/z user-42 blk-7 10m 100%",
        "",
    ],
)
def test_masking_is_idempotent(line: str):
    once = mask(line)

    assert mask(once) == once
