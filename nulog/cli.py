"""The `nulog` command: train a model, extract templates, parse a LogHub file, score lines.

Results go to stdout (JSON lines) or to the named output file; progress and logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from nulog.checkpoint import load_checkpoint, save_checkpoint, write_vocab
from nulog.config import DEFAULT_FILTERS, NuLogConfig
from nulog.data import read_lines
from nulog.parse import read_raw_lines, split_fields, templates, write_structured_csv
from nulog.score import score_lines
from nulog.tokenizer import Tokenizer
from nulog.train import Progress, train

log = logging.getLogger("nulog")

MAX_LEN_LIMIT = 1024  # positions `parse` may give the model for a file with very long lines


def _progress(p: Progress) -> None:
    print(
        f"\repoch {p.epoch}/{p.epochs} step {p.step}/{p.steps} loss {p.loss:.4f} "
        f"{p.percent:5.1f}% eta {p.eta_s:.0f}s",
        end="\n" if p.step == p.steps else "",
        file=sys.stderr,
        flush=True,
    )


def _write_jsonl(rows: list[dict]) -> None:
    out = sys.stdout
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()


def cmd_train(args: argparse.Namespace) -> int:
    lines = list(read_lines(args.inputs))
    if not lines:
        log.error("the inputs hold no log lines")
        return 2
    config = NuLogConfig(epochs=args.epochs, seed=args.seed, k=args.k, filters=args.filters, dedupe=not args.all_lines)
    result = train(lines, config, device=args.device, on_progress=_progress)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "nulog_model_latest.pt", result.model, result.vocab, step=result.steps)
    write_vocab(out / "vocab.txt", result.vocab)
    log.info("model written to %s (%d lines, %.1f s)", out, result.lines, result.seconds)
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.model, device=args.device if args.device != "auto" else "cpu")
    lines = list(read_lines(args.inputs))
    found = templates(ckpt.model, ckpt.vocab, lines, k=args.k, merge=not args.no_merge)
    _write_jsonl([{"log": line, "template": t} for line, t in zip(lines, found, strict=True)])
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    ckpt = load_checkpoint(args.model, device=args.device if args.device != "auto" else "cpu")
    lines = list(read_lines(args.inputs))
    scores = score_lines(ckpt.model, ckpt.vocab, lines, k=args.k, threshold=args.threshold)
    _write_jsonl(
        [{"log": s.log, "score": round(s.score, 6), "label": s.label, "template": s.template} for s in scores]
    )
    return 0


def cmd_parse(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    raw = read_raw_lines(args.logfile)
    headers, rows = split_fields(raw, args.log_format)
    contents = [r["Content"] for r in rows]
    train_lines = [c for c in contents if c.strip()]
    # The model sees every token of every line of the file, up to a bound on attention's cost.
    tokenizer = Tokenizer(args.filters)
    longest = max((len(tokenizer.tokenize(c)) + 1 for c in set(train_lines)), default=1)
    config = NuLogConfig(
        epochs=args.epochs, seed=args.seed, k=args.k, filters=args.filters, num_samples=args.num_samples,
        max_len=min(MAX_LEN_LIMIT, max(NuLogConfig.max_len, longest)),
    )
    if not train_lines:
        log.error("%s holds no log lines", args.logfile)
        return 2
    result = train(train_lines, config, device=args.device, on_progress=_progress)
    found = templates(result.model, result.vocab, contents, k=args.k, merge=not args.no_merge)
    write_structured_csv(args.output, headers, rows, found)
    log.info(
        "parsed %d lines into %d templates in %.1f s -> %s",
        len(raw), len(set(found)), time.monotonic() - t0, args.output,
    )
    if args.model_output:
        Path(args.model_output).mkdir(parents=True, exist_ok=True)
        save_checkpoint(Path(args.model_output) / "nulog_model_latest.pt", result.model, result.vocab, step=result.steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nulog", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="command", required=True)
    defaults = NuLogConfig()

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    t = sub.add_parser("train", help="train a model on log lines (text, or JSONL with a `log` field)")
    t.add_argument("inputs", nargs="+", metavar="INPUT")
    t.add_argument("--output", required=True, help="directory for nulog_model_latest.pt and vocab.txt")
    t.add_argument("--epochs", type=int, default=defaults.epochs)
    t.add_argument("--seed", type=int, default=defaults.seed)
    t.add_argument("--k", type=int, default=defaults.k)
    t.add_argument("--filters", default=DEFAULT_FILTERS, help="token-splitting regex; matches are kept as tokens")
    t.add_argument("--all-lines", action="store_true", help="train on repeated lines as often as they occur")
    common(t)
    t.set_defaults(func=cmd_train)

    m = sub.add_parser("templates", help="one JSON line {log, template} per input line")
    m.add_argument("inputs", nargs="+", metavar="INPUT", help="files, or - for stdin")
    m.add_argument("--model", required=True, help="model directory or .pt file")
    m.add_argument("--k", type=int, default=None, help="top-k (default: the model's)")
    m.add_argument("--no-merge", action="store_true", help="NuLog's per-line rule only (see merge_templates)")
    common(m)
    m.set_defaults(func=cmd_templates)

    s = sub.add_parser("score", help="one JSON line {log, score, label, template} per input line")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="files, or - for stdin")
    s.add_argument("--model", required=True, help="model directory or .pt file")
    s.add_argument("--k", type=int, default=None, help="top-k (default: the model's)")
    s.add_argument("--threshold", type=float, default=None, help="below it a line is an Anomaly (default 0.7)")
    common(s)
    s.set_defaults(func=cmd_score)

    r = sub.add_parser("parse", help="train on a raw log file and write LogHub's structured CSV")
    r.add_argument("logfile")
    r.add_argument("--log-format", required=True, help="LogHub format, e.g. '<Date> <Time> <Level>: <Content>'")
    r.add_argument("--filters", default=DEFAULT_FILTERS)
    r.add_argument("--k", type=int, default=defaults.k)
    r.add_argument("--epochs", type=int, default=defaults.epochs)
    r.add_argument("--num-samples", type=int, default=0)
    r.add_argument("--seed", type=int, default=defaults.seed)
    r.add_argument("--output", required=True, help="structured CSV to write")
    r.add_argument("--model-output", default=None, help="also save the trained model in this directory")
    r.add_argument("--no-merge", action="store_true", help="NuLog's per-line rule only (see merge_templates)")
    common(r)
    r.set_defaults(func=cmd_parse)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except FileNotFoundError as e:
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
