from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nulog.config import DEFAULT_FILTERS
from nulog.tokenizer import BLANK_ID, NUM_ID, UNK_ID, Tokenizer, Vocab, constant_digit_tokens, is_placeholder

LINES = [
    "PacketResponder 1 for block blk_-6952295868487656571 terminating",
    "BLOCK* NameSystem.addStoredBlock: blockMap updated: 10.251.73.220:50010 is added to blk_7128 size 67108864",
    "ciod: failed to read message prefix on control stream (CioStream socket to 172.16.96.116:33569",
    "  leading and trailing  spaces,,, and ... dots  ",
    "onExtend:1514038530000 14 0 4|x=1;y=(2)",
    "",
]
FILTERS = [DEFAULT_FILTERS, r"(\s+blk_)|(:)|(\s)", r"([ |:|\(|\)|=|,])|(core.)|(\.{2,})", r"([ ])", ""]


@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("line", LINES)
def test_tokens_join_back_to_the_line(filters: str, line: str) -> None:
    assert "".join(Tokenizer(filters).tokenize(line)) == line


def test_delimiters_are_kept_as_tokens() -> None:
    tokens = Tokenizer(r"(\s+blk_)|(:)|(\s)").tokenize("Served block blk_123 to /10.0.0.1:50010")
    assert tokens == ["Served", " ", "block", " blk_", "123", " ", "to", " ", "/10.0.0.1", ":", "50010"]


def test_placeholders_stay_single_tokens_even_inside_words() -> None:
    tokens = Tokenizer().tokenize("Connection from <IP>:<NUM> for blk_<NUM> took <DURATION>")
    assert "<IP>" in tokens and "<DURATION>" in tokens
    assert tokens[tokens.index("blk_") + 1] == "<NUM>"
    assert "".join(tokens) == "Connection from <IP>:<NUM> for blk_<NUM> took <DURATION>"


def test_general_and_fast_splitting_give_the_same_tokens() -> None:
    for filters in FILTERS:
        tok = Tokenizer(filters)
        assert tok._split is not None or not filters
        for line in LINES:
            fast = tok.tokenize(line)
            tok._split, saved = None, tok._split
            assert tok.tokenize(line) == fast
            tok._split = saved


def test_a_filter_that_can_match_nothing_keeps_words_whole() -> None:
    assert Tokenizer(r"(\s*)").tokenize("ab cd") == ["ab", " ", "cd"]


def test_vocabulary_maps_unseen_tokens_to_their_class() -> None:
    vocab = Vocab.build([["Served", " ", "block", " ", "123"], ["block", "<IP>"]])
    assert "123" not in vocab.stoi
    assert vocab.stoi["98765"] == NUM_ID and vocab.stoi["<UUID>"] == NUM_ID
    assert vocab.stoi["never-seen"] == UNK_ID
    assert vocab.stoi["\t\t"] == BLANK_ID
    assert vocab.itos[vocab.stoi["block"]] == "block"
    assert vocab.stoi["<IP>"] not in (NUM_ID, UNK_ID) and is_placeholder("<IP>")
    ids = [vocab.stoi[t] for t in ("block", " ", "<IP>", "zzz")]
    assert vocab.predicted[ids].tolist() == [True, False, False, True]


def _lines(template: str, values: list[str]) -> list[list[str]]:
    return [Tokenizer().tokenize(template.format(v)) for v in values]


def test_a_digit_token_that_holds_its_slot_is_a_constant() -> None:
    lines = _lines("link {} up", ["eth0"] * 19 + ["eth1"]) + _lines("user {} logged in", ["eth0"])
    assert constant_digit_tokens(lines, min_lines=3, slot_share=0.9) == {"eth0"}


def test_digit_tokens_that_share_a_slot_or_never_recur_stay_variables() -> None:
    shared = _lines("PacketResponder {} terminating", ["0", "1", "2"] * 10)
    counters = _lines("took {} ms", [str(i) for i in range(30)])
    rare = _lines("mounted {} ok", ["sda1", "sda1"])
    assert constant_digit_tokens(shared + counters + rare, min_lines=3, slot_share=0.9) == set()


def test_the_encoders_lookup_gives_the_vocabularys_ids_and_forgets_unseen_tokens_past_its_bound(monkeypatch) -> None:
    from nulog import encoder as encoder_module
    from nulog.encoder import LineEncoder

    monkeypatch.setattr(encoder_module, "LOOKUP_EXTRA", 3)
    vocab = Vocab.build([["Served", " ", "block", " ", "<IP>"]])
    enc = LineEncoder(Tokenizer(), vocab)
    tokens = ["block", "98765", "never-seen", "\t\t", "<IP>", "zzz", "4242", "block", "98765", "other"]
    assert [enc._id(t) for t in tokens] == [vocab.stoi[t] for t in tokens]
    lookup = enc._id.__self__
    assert len(lookup) <= len(vocab.itos) + 3  # unseen tokens remembered up to the bound, then started again
    assert "98765" not in vocab.stoi  # the vocabulary itself never learns them


# Characters of every kind the whitespace-runs path must get right: Unicode whitespace that `\s` matches,
# delimiters, placeholder pieces, digits, and letters of the LogHub filters.
TRICKY = "ab<>ABZ_09  \t\n\x1c\x85\xa0\u2003:=,;()[]{}\"'|.-blk"
RUNS_FILTERS = [DEFAULT_FILTERS, r"(\s)", r"(\s+)|(:)", r"(\d+)|(\s+)"]
NOT_RUNS_FILTERS = [r"(\s+blk_)|(:)|(\s)", r"([ |:|\(|\)|=|,])|(core.)|(\.{2,})", r"([ ])", r"(a\s)|(\s)",
                    r"([\s:])", r"(\bx)|(\s)", r"([^a])|(\s)", ""]


def test_the_whitespace_runs_path_is_taken_only_where_a_line_splits_at_its_whitespace() -> None:
    assert all(Tokenizer(f).runs_pattern is not None for f in RUNS_FILTERS)
    assert all(Tokenizer(f).runs_pattern is None for f in NOT_RUNS_FILTERS)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(RUNS_FILTERS), st.lists(st.text(alphabet=TRICKY, max_size=30), min_size=1, max_size=8))
def test_encoding_by_whitespace_runs_gives_the_ids_of_tokenizing_each_line_whole(filters: str, lines: list[str]) -> None:
    from nulog.encoder import LineEncoder

    tok = Tokenizer(filters)
    enc = LineEncoder(tok, Vocab.build([tok.tokenize(line) for line in lines[:2]]))
    whole = [tuple(enc._id(t) for t in tok._tokenize_slowly(line)) for line in lines]
    assert enc.keys(lines) == whole
    assert enc.keys(lines) == whole  # a second time, from the words' ids kept the first time
