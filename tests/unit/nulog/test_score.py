from __future__ import annotations

from nulog.score import score_lines
from nulog.train import TrainResult


def test_unseen_line_scores_below_threshold_and_seen_lines_above(trained: TrainResult, corpus: list[str]) -> None:
    injected = "kernel panic: unable to mount root filesystem on unknown device"
    lines = corpus[:40] + [injected]
    scores = score_lines(trained.model, trained.vocab, lines, threshold=0.7)
    assert len(scores) == len(lines)
    assert scores[-1].score < 0.7 and scores[-1].label == "Anomaly"
    assert all(s.score >= 0.7 and s.label == "Normal" for s in scores[:-1])


def test_known_words_in_a_strange_order_score_lower_than_the_real_line(trained: TrainResult) -> None:
    real = "Verification succeeded for blk_1234567890"
    shuffled = "succeeded blk_1234567890 Verification for"
    s_real, s_shuffled = score_lines(trained.model, trained.vocab, [real, shuffled])
    assert s_real.score > s_shuffled.score


def test_line_with_only_variables_scores_one(trained: TrainResult) -> None:
    (s,) = score_lines(trained.model, trained.vocab, ["12345 10.0.0.1"])
    assert s.score == 1.0 and s.label == "Normal"
