"""The `training-controller` command: serve, demo, sample-logs, and a client (submit, status, jobs, cancel, logs)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
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
        print(f"training-controller: cannot connect to NATS at {settings.nats.url}: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if type(e).__name__ == "NoServersError":
            print(f"training-controller: cannot connect to NATS at {settings.nats.url}", file=sys.stderr)
            return 1
        raise
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from training_controller.demo.run import run_demo

    workdir = Path(args.workdir) if args.workdir else None
    return run_demo(keep=args.keep, epochs=args.epochs, timeout=args.timeout, workdir=workdir, console=args.console,
                    port=args.port)


def cmd_sample_logs(args: argparse.Namespace) -> int:
    from training_controller.demo.samples import write_sample_logs

    if args.hours <= 0:
        print("training-controller: --hours must be positive", file=sys.stderr)
        return 2
    end_ns = int(args.end_ts) if args.end_ts is not None else None
    paths = write_sample_logs(Path(args.out), hours=args.hours, end_ns=end_ns, rate_per_s=args.rate, seed=args.seed)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


def _nats_url(args: argparse.Namespace) -> str:
    return args.nats or os.environ.get("NATS_SERVER_URL") or "nats://127.0.0.1:4222"


def _client(coro_factory) -> int:
    from training_controller.client import ClientError

    try:
        return asyncio.run(coro_factory())
    except ClientError as e:
        print(f"training-controller: {e}", file=sys.stderr)
        return 1


def cmd_submit(args: argparse.Namespace) -> int:
    from training_controller.client import follow_logs, parse_time, request

    async def run() -> int:
        intervals = [{"start_ts": parse_time(a), "end_ts": parse_time(b)} for a, b in args.interval]
        payload = {"model_to_train": args.model, "time_intervals": intervals}
        reply = await request(_nats_url(args), "train", payload)
        print(f"job {reply['job_id']} queued; {reply['queue_position']} job(s) before it")
        if args.follow:
            return 0 if await follow_logs(_nats_url(args), reply["job_id"]) == "succeeded" else 1
        return 0

    return _client(run)


def cmd_status(args: argparse.Namespace) -> int:
    from training_controller.client import describe_job, request

    async def run() -> int:
        record = await request(_nats_url(args), "training_status", {"job_id": args.job_id})
        print(json.dumps(record, indent=2) if args.json else describe_job(record))
        return 0

    return _client(run)


def cmd_jobs(args: argparse.Namespace) -> int:
    from training_controller.client import request

    async def run() -> int:
        query: dict = {"limit": args.limit}
        if args.status:
            query["status"] = args.status
        jobs = (await request(_nats_url(args), "training_jobs", query))["jobs"]
        if args.json:
            print(json.dumps(jobs, indent=2))
            return 0
        print(f"{'JOB':<14}{'PHASE':<11}{'LOGS':>8}  {'CREATED':<25}MESSAGE")
        for job in jobs:
            logs = "" if job.get("log_count") is None else str(job["log_count"])
            print(f"{job['job_id']:<14}{job['phase']:<11}{logs:>8}  {job['created_at']:<25}{job['message'][:60]}")
        return 0

    return _client(run)


def cmd_cancel(args: argparse.Namespace) -> int:
    from training_controller.client import request

    async def run() -> int:
        record = await request(_nats_url(args), "training_cancel", {"job_id": args.job_id})
        print(f"job {record['job_id']}: {record['phase']}{' (cancelling)' if record.get('cancel_requested') and record['phase'] not in ('cancelled',) else ''}")
        return 0

    return _client(run)


def cmd_logs(args: argparse.Namespace) -> int:
    from training_controller.client import describe_job, follow_logs, request

    async def run() -> int:
        if args.follow:
            return 0 if await follow_logs(_nats_url(args), args.job_id) == "succeeded" else 1
        record = await request(_nats_url(args), "training_status", {"job_id": args.job_id})
        for step in record["history"]:
            print(f"{step['at']}  {step['phase']:<10} {step['message']}")
        print(describe_job(record))
        return 0

    return _client(run)


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from training_controller.asyncapi import render

    text = render()
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="training-controller", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the controller, configured by environment variables")
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="run one training end to end on embedded defaults")
    d.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    d.add_argument("--timeout", type=float, default=170.0, help="give up after this many seconds")
    d.add_argument("--keep", action="store_true", help="keep the temporary directory and print its path")
    d.add_argument("--workdir", default=None, help="make the temporary directory inside this one")
    d.add_argument("--console", action="store_true",
                   help="print the web console's URL and token, and keep the stack running until Ctrl-C")
    d.add_argument("--port", type=int, default=None, help="HTTP port of the controller (default: a free one)")
    d.set_defaults(func=cmd_demo)

    g = sub.add_parser("sample-logs", help="write realistic JSONL log documents")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--hours", type=float, default=1.0, help="hours of logs (default 1)")
    g.add_argument("--end-ts", type=int, default=None, help="end of the span in ns since the epoch (default now)")
    g.add_argument("--rate", type=float, default=2.0, help="documents per second (default 2)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_sample_logs)

    a = sub.add_parser("asyncapi", help="print the AsyncAPI document of the NATS subjects")
    a.add_argument("--output", default=None, help="write it to this file")
    a.set_defaults(func=cmd_asyncapi)

    def client_command(name: str, help: str, func) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument("--nats", default=None, help="NATS URL (default $NATS_SERVER_URL or nats://127.0.0.1:4222)")
        c.set_defaults(func=func)
        return c

    c = client_command("submit", "ask a running controller to train", cmd_submit)
    c.add_argument(
        "--interval", nargs=2, action="append", required=True, metavar=("START", "END"),
        help="time range: nanoseconds since the epoch or ISO-8601 (UTC); repeat for several",
    )
    c.add_argument("--model", default="nulog")
    c.add_argument("-f", "--follow", action="store_true", help="follow the job until it ends")
    c = client_command("status", "show one job", cmd_status)
    c.add_argument("job_id")
    c.add_argument("--json", action="store_true")
    c = client_command("jobs", "list recent jobs", cmd_jobs)
    c.add_argument("--status", default=None, help="only jobs in this phase")
    c.add_argument("--limit", type=int, default=20)
    c.add_argument("--json", action="store_true")
    c = client_command("cancel", "cancel a job", cmd_cancel)
    c.add_argument("job_id")
    c = client_command("logs", "a job's history; -f follows its progress", cmd_logs)
    c.add_argument("job_id")
    c.add_argument("-f", "--follow", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)
