"""The command-line client: talks to a running controller over NATS, as any other service would.

`submit`, `status`, `jobs`, `cancel` and `logs` are request/reply or subscriptions on the wire contract's
subjects; nothing here reaches into the controller's state directly.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import nats

from nulog.protocol import ProgressEvent
from training_controller.messages import LineLog, PhaseLog, Subjects, TrainerLog, parse_job_log

FINAL = {"succeeded", "failed", "cancelled"}


class ClientError(Exception):
    """The controller could not be asked, or said no; the message is for the user."""


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch from an integer or an ISO-8601 time (UTC when no offset is given)."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ClientError(f"{text!r} is neither nanoseconds since the epoch nor an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


async def request(url: str, subject: str, payload: dict[str, Any] | bytes, *, timeout: float = 10.0) -> Any:
    """One request; the reply decoded as JSON when it is JSON."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    nc = await _connect(url)
    try:
        reply = await nc.request(subject, data, timeout=timeout)
    except nats.errors.NoRespondersError:
        raise ClientError(f"no training controller answers on {url}") from None
    except nats.errors.TimeoutError:
        raise ClientError(f"the training controller on {url} did not answer within {timeout:.0f}s") from None
    finally:
        await nc.close()
    try:
        body = json.loads(reply.data)
    except ValueError:
        return reply.data.decode(errors="replace")
    if isinstance(body, dict) and set(body) == {"error"}:
        raise ClientError(body["error"])
    return body


async def _connect(url: str) -> nats.NATS:
    try:
        return await nats.connect(url, name="training-controller-cli", max_reconnect_attempts=1, connect_timeout=5)
    except Exception as e:  # nats-py raises several unrelated types for an unreachable server
        raise ClientError(f"cannot connect to NATS at {url}: {e}") from None


def progress_bar(p: ProgressEvent, *, width: int = 30) -> str:
    """`[#########.....]  45.0%  epoch 2/3  loss 0.4123  eta 12s` for one progress event."""
    filled = int(width * p.percent / 100)
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {p.percent:5.1f}%  epoch {p.epoch}/{p.epochs}"
        f"  loss {p.loss:.4f}  eta {p.eta_s:.0f}s"
    )


def describe_job(record: dict[str, Any]) -> str:
    lines = [f"job {record['job_id']}: {record['phase']} - {record['message']}"]
    if record.get("queue_position"):
        n = record["queue_position"]
        lines.append(f"  {n} job{'s' if n != 1 else ''} before this one")
    for key in ("log_count", "train_data_version_hash", "created_at", "started_at", "finished_at"):
        if record.get(key) is not None:
            lines.append(f"  {key}: {record[key]}")
    if record.get("parameters"):
        shown = ", ".join(f"{k}={v}" for k, v in record["parameters"].items() if v is not None)
        lines.append(f"  parameters: {shown}")
    if record.get("progress"):
        lines.append("  progress: " + progress_bar(ProgressEvent.model_validate(record["progress"])))
    for worker in record.get("workers") or []:
        message = f" - {worker['message']}" if worker.get("message") else ""
        lines.append(f"  worker {worker['index']} ({worker['role']}, {worker['name']}): {worker['state']}{message}")
    if record.get("artifacts"):
        lines.append(f"  model: {record['artifacts'].get('bucket')}/{record['artifacts'].get('model')}")
    return "\n".join(lines)


async def follow_logs(url: str, job_id: str, *, out: TextIO = sys.stdout) -> str:
    """Print a job's phases, log lines and a progress bar until it ends; returns its final phase."""
    record = await request(url, Subjects.TRAINING_STATUS, {"job_id": job_id})
    if record["phase"] in FINAL:
        print(describe_job(record), file=out)
        return record["phase"]
    nc = await _connect(url)
    queue: asyncio.Queue = asyncio.Queue()
    await nc.subscribe(Subjects.training_logs(job_id), cb=queue.put)
    tty = out.isatty()
    try:
        print(describe_job(record), file=out)
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), timeout=15)
            except TimeoutError:
                # Quiet for a while (exporting a large window, or a controller restart): ask for the record.
                record = await request(url, Subjects.TRAINING_STATUS, {"job_id": job_id})
                if record["phase"] in FINAL:
                    print(describe_job(record), file=out)
                    return record["phase"]
                continue
            update = parse_job_log(msg.data)
            if isinstance(update, PhaseLog):
                print(("\n" if tty else "") + f"{update.phase.value}: {update.message}", file=out, flush=True)
                if update.phase.value in FINAL:
                    return update.phase.value
            elif isinstance(update, TrainerLog) and isinstance(update.event, ProgressEvent):
                bar = progress_bar(update.event)
                print("\r" + bar if tty else bar, end="" if tty else "\n", file=out, flush=True)
            elif isinstance(update, LineLog):
                print(("\n" if tty else "") + update.line, file=out, flush=True)
    finally:
        await nc.close()
