from __future__ import annotations

import random

import pytest

from nulog.predict import LRUCache, Predictor
from nulog.train import TrainResult

from .conftest import SMALL_PARSE, TEMPLATES, draw_lines, train_small


def _predictor(result: TrainResult, **kw) -> Predictor:
    return Predictor(result.model, result.encoder, SMALL_PARSE, **kw)


def test_templates_keep_line_count_and_order(trained: TrainResult, corpus: list[str]) -> None:
    lines = corpus[:50] + ["totally unseen words here", corpus[0]]
    found = [r.template for r in _predictor(trained).predict(lines)]
    assert len(found) == len(lines)
    assert found[-1] == found[0]
    for line, template in zip(lines, found, strict=True):
        assert len(template.split()) == len(line.split())


def test_templates_recover_the_synthetic_events(trained: TrainResult, corpus: list[str]) -> None:
    found = {r.template for r in _predictor(trained).predict(corpus)}
    assert "PacketResponder <*> for block <*> terminating" in found
    assert "Verification succeeded for <*>" in found
    assert len(found) == len(TEMPLATES)


def test_grouped_and_line_by_line_paths_agree_exactly(trained: TrainResult, corpus: list[str]) -> None:
    rng = random.Random(3)
    odd = [
        "Verification  succeeded\tfor blk_1",  # whitespace never seen in training
        "Verification succeeded for never-seen-word",
        " ".join(["PacketResponder 1 for block"] * 30),  # longer than the model's max_len
        "",
        "12345 10.0.0.1",
    ]
    lines = corpus + odd + [rng.choice(corpus) for _ in range(100)]
    rng.shuffle(lines)
    grouped = _predictor(trained).predict(lines)
    literal = _predictor(trained).predict(lines, grouped=False)
    assert grouped == literal
    assert len({r.template for r in grouped}) > len(TEMPLATES)


def test_sequences_seen_before_skip_the_model(trained: TrainResult, corpus: list[str]) -> None:
    predictor = _predictor(trained, cache_size=1000)
    first = predictor.predict(corpus[:100])
    rows = predictor.model_rows
    assert 0 < rows <= len(TEMPLATES)  # once per distinct id sequence, not per line
    assert predictor.predict(corpus[:100]) == first
    assert predictor.model_rows == rows


def test_lru_cache_keeps_the_most_recently_used() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2


def test_stream_gives_the_results_of_one_call(trained: TrainResult, corpus: list[str]) -> None:
    whole = _predictor(trained).predict(corpus)
    streamed = [r for _, r in _predictor(trained).stream(iter(corpus), chunk=7)]
    assert [r.score for r in streamed] == [r.score for r in whole]
    assert {r.template for r in streamed} == {r.template for r in whole}


def test_unseen_line_scores_below_threshold_and_seen_lines_above(trained: TrainResult, corpus: list[str]) -> None:
    injected = "kernel panic: unable to mount root filesystem on unknown device"
    scores = _predictor(trained).predict(corpus[:40] + [injected])
    assert scores[-1].score < 0.7 and scores[-1].label == "Anomaly"
    assert all(s.score >= 0.7 and s.label == "Normal" for s in scores[:-1])


def test_known_words_in_a_strange_order_score_lower_than_the_real_line(trained: TrainResult) -> None:
    real, shuffled = _predictor(trained).predict(
        ["Verification succeeded for blk_1234567890", "succeeded blk_1234567890 Verification for"])
    assert real.score > shuffled.score


def test_line_with_only_variables_scores_one(trained: TrainResult) -> None:
    (s,) = _predictor(trained).predict(["12345 10.0.0.1"])
    assert s.score == 1.0 and s.label == "Normal" and s.template == "<*> <*>"


DIGIT_TEMPLATES = [
    "link eth0 up at {speed}Mbps on port {port}",
    'client {ip} "GET /index.html HTTP/1.1" {status} {size}',
    "kernel x86_64 mounted sda1 as root, request id={n}",
    "PacketResponder {d} for block blk_{n} terminating",
]


def _fill_digits(rng: random.Random, t: str) -> str:
    return t.format(
        speed=rng.choice((100, 1000, 10000)), port=rng.randrange(1, 48), status=rng.choice((200, 404, 500)),
        size=rng.randrange(100, 9999), ip=f"10.0.{rng.randrange(256)}.{rng.randrange(256)}",
        n=rng.randrange(10**6, 10**7), d=rng.randrange(3),
    )


def digit_lines(n: int, *, seed: int = 0) -> list[str]:
    """Lines whose constants hold digits, beside variables that hold digits (some repeating)."""
    return draw_lines(DIGIT_TEMPLATES, n, seed=seed, fill=_fill_digits)


@pytest.mark.slow
def test_templates_keep_digit_bearing_constants_and_not_digit_bearing_variables() -> None:
    lines = digit_lines(400)
    result = train_small(lines, epochs=4, min_steps=150)
    assert {"eth0", "HTTP/1.1", "x86_64", "sda1"} <= set(result.encoder.vocab.itos)
    found = {r.template for r in _predictor(result).predict(lines)}
    assert found == {
        "link eth0 up at <*> on port <*>",
        'client <*> "GET /index.html HTTP/1.1" <*> <*>',
        "kernel x86_64 mounted sda1 as root, request id=<*>",
        "PacketResponder <*> for block <*> terminating",
    }
