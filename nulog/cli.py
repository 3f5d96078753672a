"""The `nulog` command: train a model, extract templates, parse a LogHub file, score lines, serve predictions.

Results go to stdout (JSON lines) or to the named output file; progress and logs go to stderr. `templates`
and `score` stream: input is read and output written chunk by chunk. torch is imported only by the
commands that run a model, once their arguments are valid.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from json.encoder import encode_basestring
from pathlib import Path
from typing import TYPE_CHECKING

from nulog.config import DEFAULT_FILTERS, ParseConfig, TrainConfig
from nulog.data import read_lines

if TYPE_CHECKING:
    from nulog.predict import LineResult, Predictor
    from nulog.train import Progress

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


def _predictor(args: argparse.Namespace) -> Predictor:
    from dataclasses import replace

    from nulog.checkpoint import load_checkpoint
    from nulog.predict import Predictor

    if args.threads:
        import torch

        # One thread by default: a model pass is many small ops, and on a shared machine a second thread
        # waits on a busy core more than it helps (measured: 3x slower under load, 1.7x faster idle).
        torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.model, device=args.device if args.device != "auto" else "cpu")
    changes = {"k": args.k, "threshold": args.threshold, "merge": False if args.no_merge else None}
    config = replace(ckpt.parse, **{n: v for n, v in changes.items() if v is not None})
    return Predictor(ckpt.model, ckpt.encoder, config)


def write_rows(rows: Iterable[tuple[str, LineResult]], tail: Callable[[LineResult], str], *, chunk: int = 4096) -> None:
    """One JSON object per line on stdout; a result's part of the object is encoded once per result."""
    out = sys.stdout
    tails: dict[LineResult, str] = {}
    buf: list[str] = []
    for line, res in rows:
        t = tails.get(res)
        if t is None:
            if len(tails) > 100_000:
                tails.clear()
            t = tails[res] = tail(res)
        buf.append('{"log": ' + encode_basestring(line) + t)
        if len(buf) >= chunk:
            out.write("".join(buf))
            buf.clear()
    out.write("".join(buf))
    out.flush()


def _template_tail(res: LineResult) -> str:
    return ', "template": ' + encode_basestring(res.template) + "}\n"


def _score_tail(res: LineResult) -> str:
    return (f', "score": {round(res.score, 6)!r}, "label": "{res.label}", '
            f'"template": {encode_basestring(res.template)}}}\n')


def cmd_train(args: argparse.Namespace) -> int:
    from nulog.checkpoint import save_checkpoint, write_vocab
    from nulog.train import train

    lines = list(read_lines(args.inputs))
    if not lines:
        log.error("the inputs hold no log lines")
        return 2
    config = TrainConfig(epochs=args.epochs, seed=args.seed, filters=args.filters)
    result = train(lines, config, parse=ParseConfig(k=args.k), device=args.device, on_progress=_progress,
                   threads=args.threads or (os.cpu_count() or 1))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "nulog_model_latest.pt", result.checkpoint)
    write_vocab(out / "vocab.txt", result.encoder.vocab)
    log.info("trained %d steps in %.1f s, %.0f masked tokens/s, %d id sequences of %d lines; model written to %s",
             result.steps, result.seconds, result.tokens_per_s, result.sequences, result.lines, out)
    return 0


def _stream(args: argparse.Namespace) -> Iterator[tuple[str, LineResult]]:
    return _predictor(args).stream(read_lines(args.inputs))


def cmd_templates(args: argparse.Namespace) -> int:
    write_rows(_stream(args), _template_tail)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    write_rows(_stream(args), _score_tail)
    return 0


def cmd_parse(args: argparse.Namespace) -> int:
    from nulog.checkpoint import save_checkpoint
    from nulog.parse import read_raw_lines, split_fields, write_structured_csv
    from nulog.predict import Predictor
    from nulog.tokenizer import Tokenizer
    from nulog.train import train

    t0 = time.monotonic()
    raw = read_raw_lines(args.logfile)
    headers, rows = split_fields(raw, args.log_format)
    contents = [r["Content"] for r in rows]
    train_lines = [c for c in contents if c.strip()]
    if not train_lines:
        log.error("%s holds no log lines", args.logfile)
        return 2
    if args.num_samples:
        log.warning("--num-samples %d ignored: training visits every distinct id sequence", args.num_samples)
    # The model sees every token of every line of the file, up to a bound on attention's cost.
    tokenizer = Tokenizer(args.filters)
    longest = 1 + max(sum(not t.isspace() for t in tokenizer.tokenize(c)) for c in set(train_lines))
    model_args = {"max_len": min(MAX_LEN_LIMIT, max(256, longest))}
    config = TrainConfig(epochs=args.epochs, seed=args.seed, filters=args.filters)
    parse = ParseConfig(k=args.k, merge=not args.no_merge)
    result = train(train_lines, config, model_args=model_args, parse=parse, device=args.device,
                   on_progress=_progress, threads=args.threads or (os.cpu_count() or 1))
    found = [r.template for r in Predictor(result.model, result.encoder, parse).predict(contents)]
    write_structured_csv(args.output, headers, rows, found)
    log.info("parsed %d lines into %d templates in %.1f s -> %s",
             len(raw), len(set(found)), time.monotonic() - t0, args.output)
    if args.model_output:
        Path(args.model_output).mkdir(parents=True, exist_ok=True)
        save_checkpoint(Path(args.model_output) / "nulog_model_latest.pt", result.checkpoint)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from nulog.serve import main as serve_main

    return serve_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nulog", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="command", required=True)
    train_defaults, parse_defaults = TrainConfig(), ParseConfig()

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        sp.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: torch's default)")

    t = sub.add_parser("train", help="train a model on log lines (text, or JSONL with a `log` field)")
    t.add_argument("inputs", nargs="+", metavar="INPUT")
    t.add_argument("--output", required=True, help="directory for nulog_model_latest.pt and vocab.txt")
    t.add_argument("--epochs", type=int, default=train_defaults.epochs)
    t.add_argument("--seed", type=int, default=train_defaults.seed)
    t.add_argument("--k", type=int, default=parse_defaults.k)
    t.add_argument("--filters", default=DEFAULT_FILTERS, help="token-splitting regex; matches are kept as tokens")
    common(t)
    t.set_defaults(func=cmd_train)

    for name, func, fields in (("templates", cmd_templates, "{log, template}"),
                               ("score", cmd_score, "{log, score, label, template}")):
        m = sub.add_parser(name, help=f"one JSON line {fields} per input line")
        m.add_argument("inputs", nargs="+", metavar="INPUT", help="files, or - for stdin")
        m.add_argument("--model", required=True, help="model directory or .pt file")
        m.add_argument("--k", type=int, default=None, help="top-k (default: the model's)")
        m.add_argument("--threshold", type=float, default=None, help="below it a line is an Anomaly (default: the model's)")
        m.add_argument("--no-merge", action="store_true", help="NuLog's per-line rule only (see nulog.templates)")
        common(m)
        m.set_defaults(func=func)

    r = sub.add_parser("parse", help="train on a raw log file and write LogHub's structured CSV")
    r.add_argument("logfile")
    r.add_argument("--log-format", required=True, help="LogHub format, e.g. '<Date> <Time> <Level>: <Content>'")
    r.add_argument("--filters", default=DEFAULT_FILTERS)
    r.add_argument("--k", type=int, default=parse_defaults.k)
    r.add_argument("--epochs", type=int, default=train_defaults.epochs)
    r.add_argument("--num-samples", type=int, default=0, help="ignored; kept for LogHub's settings files")
    r.add_argument("--seed", type=int, default=train_defaults.seed)
    r.add_argument("--output", required=True, help="structured CSV to write")
    r.add_argument("--model-output", default=None, help="also save the trained model in this directory")
    r.add_argument("--no-merge", action="store_true", help="NuLog's per-line rule only (see nulog.templates)")
    common(r)
    r.set_defaults(func=cmd_parse)

    v = sub.add_parser("serve", help="the inference worker: answer nulog_predict on NATS from the current model")
    v.add_argument("--nats", default=None, help="NATS URL (default $NATS_SERVER_URL or nats://127.0.0.1:4222)")
    v.add_argument("--store", choices=["local", "minio"], default=None, help="object store (default $OBJECT_STORE or local)")
    v.add_argument("--local-store-dir", default=None, help="root of the local store's buckets (default $LOCAL_STORE_DIR)")
    v.add_argument("--bucket", default=None, help="models bucket (default $S3_BUCKET or opni-nulog-models)")
    v.add_argument("--lazy", action="store_true", help="load the model at the first request, not at start")
    v.add_argument("--exit-with-stdin", action="store_true", help="stop when stdin closes (a parent's lifeline)")
    v.add_argument("--announce-ready", action="store_true", help="print a line on stdout once requests are answered")
    common(v)
    v.set_defaults(func=cmd_serve)
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
