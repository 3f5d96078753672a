from __future__ import annotations

import pytest

from nulog.config import DEFAULT_FILTERS
from nulog.tokenizer import NUM_ID, UNK_ID, Tokenizer, Vocab, is_variable

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


def test_placeholders_and_digit_tokens_are_variables() -> None:
    assert is_variable("<UUID>") and is_variable("blk_123") and is_variable("10.0.0.1")
    assert not is_variable("terminating") and not is_variable("<html>")


def test_vocabulary_maps_digit_tokens_to_num_and_unseen_to_unk() -> None:
    vocab = Vocab.build([["Served", " ", "block", " ", "123"], ["block", "<IP>"]])
    assert "123" not in vocab.stoi
    assert vocab.id("98765") == NUM_ID
    assert vocab.id("never-seen") == UNK_ID
    assert vocab.itos[vocab.id("block")] == "block"
    assert vocab.id("<IP>") not in (NUM_ID, UNK_ID)
