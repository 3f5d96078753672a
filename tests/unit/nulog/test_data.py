from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from nulog.data import Corpus, read_lines
from nulog.tokenizer import CLS_ID, NUM_ID, PAD_ID, Vocab


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


def test_corpus_batches_pad_to_their_own_longest_line() -> None:
    token_lists = [["a", " ", "b"], ["c"], ["a", " ", "123", " ", "x"], ["a", " ", "b", " ", "c", " ", "d"]]
    vocab = Vocab.build(token_lists)
    corpus = Corpus.build(token_lists, vocab, max_len=16)
    assert list(corpus.lengths) == [4, 2, 6, 8]
    assert list(corpus.target_counts) == [2, 1, 2, 4]  # blanks and digit tokens are not predicted
    ids, targets = corpus.batch(torch.tensor([1, 0]), 4)
    a, b, c = vocab.id("a"), vocab.id("b"), vocab.id("c")
    assert ids.tolist() == [[CLS_ID, c, PAD_ID, PAD_ID], [CLS_ID, a, vocab.id(" "), b]]
    assert targets.tolist() == [[-1, c, -1, -1], [-1, a, -1, b]]
    ids, targets = corpus.batch(torch.tensor([2]), 6)
    assert ids[0, 3] == NUM_ID and targets[0, 3] == -1
