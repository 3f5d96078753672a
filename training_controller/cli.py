"""The `training-controller` command: serve, demo, sample-logs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from training_controller.config import ConfigError, Settings, load_settings

log = logging.getLogger("training_controller")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


async def _serve(settings: Settings) -> None:
    from training_controller.bootstrap import Service

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = await Service.start(settings)
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        await service.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as e:
        print(f"training-controller: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        asyncio.run(_serve(settings))
    except OSError as e:  # nats-py raises OSError subclasses when no server answers
        print(f"training-controller: cannot connect to NATS at {settings.nats_server_url}: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if type(e).__name__ == "NoServersError":
            print(f"training-controller: cannot connect to NATS at {settings.nats_server_url}", file=sys.stderr)
            return 1
        raise
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from training_controller.demo import run_demo

    workdir = Path(args.workdir) if args.workdir else None
    return run_demo(keep=args.keep, epochs=args.epochs, timeout=args.timeout, workdir=workdir)


def cmd_sample_logs(args: argparse.Namespace) -> int:
    from training_controller.samples import write_sample_logs

    if args.hours <= 0:
        print("training-controller: --hours must be positive", file=sys.stderr)
        return 2
    end_ns = int(args.end_ts) if args.end_ts is not None else None
    paths = write_sample_logs(Path(args.out), hours=args.hours, end_ns=end_ns, rate_per_s=args.rate, seed=args.seed)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="training-controller", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the controller, configured by environment variables")
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="run one training end to end on embedded defaults")
    d.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    d.add_argument("--timeout", type=float, default=170.0, help="give up after this many seconds")
    d.add_argument("--keep", action="store_true", help="keep the temporary directory and print its path")
    d.add_argument("--workdir", default=None, help="make the temporary directory inside this one")
    d.set_defaults(func=cmd_demo)

    g = sub.add_parser("sample-logs", help="write realistic JSONL log documents")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--hours", type=float, default=1.0, help="hours of logs (default 1)")
    g.add_argument("--end-ts", type=int, default=None, help="end of the span in ns since the epoch (default now)")
    g.add_argument("--rate", type=float, default=2.0, help="documents per second (default 2)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_sample_logs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)
