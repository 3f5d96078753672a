"""Masking: variable values become placeholders, words and versions stay, masking twice changes nothing, and
the fast batch path gives exactly what the rules applied one by one give."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training_controller.core.masking import mask, mask_lines, mask_reference
from training_controller.demo.samples import generate_documents

CASES = [
    ("connect to 10.0.0.12 failed", "connect to <IP> failed"),
    ("upstream 192.168.1.1:8080 closed", "upstream <IP> closed"),
    ("request 123e4567-e89b-12d3-a456-426614174000 done", "request <UUID> done"),
    ("GET https://example.com/api/v1/items?id=7 200", "GET <URL> <NUM>"),
    ("mail sent to bob.smith+x@example.org now", "mail sent to <EMAIL> now"),
    ("at 2021-03-29T17:36:02.123Z ok", "at <TIMESTAMP> ok"),
    ("at 2021-03-29 17:36:02,5+02:00 ok", "at <TIMESTAMP> ok"),
    ("at 2021-03-29 17:36:02 UTC ok", "at <TIMESTAMP> ok"),
    ('10.1.2.3 - - [29/Mar/2021:17:36:02 +0000] "GET / HTTP/1.1"', '<IP> - - [<TIMESTAMP>] "GET / HTTP/1.1"'),
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
    ("GET /api/items/12345 200", "GET /api/items/<NUM> <NUM>"),
]


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_variable_values_are_replaced_by_placeholders(line: str, expected: str):
    assert mask(line) == expected


def test_url_is_masked_whole_not_taken_apart_into_ip_and_numbers():
    assert mask("call http://10.0.0.1:9200/logs/_search?size=100 ok") == "call <URL> ok"


def test_email_is_masked_whole():
    assert mask("from ops-42@mail.example.com") == "from <EMAIL>"


@pytest.mark.parametrize(
    "line",
    [
        "GET / HTTP/1.1",
        '"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0.0.0 Safari/537.36"',
        "user agent curl/7.68.0",
        "via Go-http-client/1.1 and python-requests/2.31",
        "probe kube-probe/1.29",
    ],
)
def test_a_version_glued_to_a_product_name_by_a_slash_is_kept(line: str):
    assert mask(line) == line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /api/items/12345", "GET /api/items/<NUM>"),  # an id in a path
        ("GET /v/1.5 and a/b/1.5", "GET /v/<NUM> and a/b/<NUM>"),  # a path segment is not a product
        ("HTTP/2 then h2/1.5", "HTTP/<NUM> then h2/1.5"),  # a version has a dot
        ("net 10.0.0.0/8 via 10.0.0.1", "net <IP>/<NUM> via <IP>"),
        ("x-5/1.5 and 5x/1.5", "x-<NUM>/<NUM> and 5x/<NUM>"),  # a product's words start with a letter
    ],
)
def test_numbers_after_a_slash_that_are_not_versions_are_still_masked(line: str, expected: str):
    assert mask(line) == expected


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


# --- the fast path is the reference ------------------------------------------------------------------


def test_fast_path_equals_the_rules_on_generated_sample_logs():
    lines = [d["log"] for d in generate_documents(start_ns=0, end_ns=3_600 * 10**9, rate_per_s=4.0, seed=11)]
    assert len(lines) > 10_000

    fast = [line for i in range(0, len(lines), 1000) for line in mask_lines(lines[i : i + 1000])]

    assert fast == [mask_reference(line) for line in lines]
    assert sum(a != b for a, b in zip(fast, lines, strict=True)) > 0.9 * len(lines)  # it did mask


# Pieces that the rules' edges are made of: digits next to hex letters, units, separators of dates, times,
# addresses and versions, placeholders, and characters where ASCII and Unicode classes differ.
_PIECES = [
    *"0123456789abcdefxABCDEFXZTmsnhu.-+/:@_ \t\"'<>=,;()[]",
    *"\x1c\x00é٣µ",
    "://", "http", "0x", "HTTP/", "Mozilla/", "curl/", "Go-http-client/", " UTC", "Mar", "2021-03-29", "17:36:02",
    "10.0.0.1", "123e4567-e89b-12d3-a456-426614174000", "deadbeef", "ms", "µs", "<NUM>", "a@b.co",
]


def test_fast_path_equals_the_rules_on_random_lines_of_their_edge_pieces():
    rng = random.Random(20210329)
    batches = [
        ["".join(rng.choices(_PIECES, k=rng.randint(0, 30))) for _ in range(rng.randint(1, 8))]
        for _ in range(4000)
    ]

    for batch in batches:
        assert mask_lines(batch) == [mask_reference(line) for line in batch], batch


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_PIECES), max_size=25).map("".join), min_size=1, max_size=6))
def test_fast_path_equals_the_rules_on_any_batch(batch: list[str]):
    assert mask_lines(batch) == [mask_reference(line) for line in batch]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fast_path_equals_the_rules_on_any_text(line: str):
    assert mask_lines([line, line]) == [mask_reference(line)] * 2
