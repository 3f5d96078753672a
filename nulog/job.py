"""The training-job entrypoint the controller launches (`python -m nulog.job`), in a container or locally.

Its stdout is a contract: only JSON objects, one per line, flushed at once (stage, progress, done or
error), because the controller parses them into job status. Human-readable logs go to stderr.
Exit codes: 0 done, 1 failed, 2 bad arguments or no usable input.

`--data`, `--output` and `--checkpoint` may be local paths (the local launcher) or `s3://bucket/key` URIs (a
Kubernetes Job, reading and writing MinIO with the credentials in its environment): remote data is
downloaded to a scratch directory first, and remote output is uploaded once all its files are written.

One training may run in several processes (`nulog.distributed`: the variables torchrun sets, or
JOB_COMPLETION_INDEX for the rank). Every rank reads the data, trains on its share of each step and exits 0
only once rank 0 has written the artifacts. Rank 0 alone writes artifacts and checkpoints and emits
progress and done events; the other ranks emit stage and error events only. With several ranks every
message names its rank ("rank 1: ..."); a rank that fails says so, and its peers fail promptly, naming it.

With `--checkpoint`, rank 0 writes the training's state there every `--checkpoint-every-s`, and a job started
again with the same location (and the same data and settings) resumes from it on every rank.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from nulog.config import ParseConfig, TrainConfig
from nulog.protocol import (
    CHECKPOINT_FILE,
    COMPLETION_INDEX_VAR,
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_USAGE,
    METRICS_FILE,
    MODEL_FILE,
    NATIVE_MODEL_FILE,
    RANK_VAR,
    VOCAB_FILE,
    WORLD_SIZE_VAR,
    DoneEvent,
    ErrorEvent,
    JobArgs,
    ProgressEvent,
    ProtocolError,
    StageEvent,
    artifact_files,
    encode_event,
)

if TYPE_CHECKING:
    import torch

    from nulog.checkpoint import Checkpoint
    from nulog.distributed import World

log = logging.getLogger("nulog.job")


class UsageError(Exception):
    """Bad arguments or no usable input: exit code 2."""


def emit(event: StageEvent | ProgressEvent | DoneEvent | ErrorEvent) -> None:
    """Write one event line to stdout and flush it."""
    sys.stdout.write(encode_event(event) + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Reporter:
    """This rank's events: every message names the rank when there are several."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Reporter:
        """Read before anything can fail, so even a bad rendezvous names the rank it can."""
        try:
            world = int(os.environ.get(WORLD_SIZE_VAR) or 1)
            rank = int(os.environ.get(RANK_VAR) or os.environ.get(COMPLETION_INDEX_VAR) or 0)
        except ValueError:
            return cls()
        return cls(rank, world)

    def say(self, message: str) -> str:
        return f"rank {self.rank}: {message}" if self.world_size > 1 else message

    def stage(self, stage: str, message: str) -> None:
        emit(StageEvent(stage=stage, message=self.say(message)))

    def error_line(self, message: str) -> str:
        return encode_event(ErrorEvent(message=self.say(message)))

    def die(self, message: str) -> NoReturn:
        """End the process now with an error event: called from the heartbeat's thread while the main
        thread may be stuck in a collective, so it writes past sys.stdout's lock and exits at once."""
        log.error("%s", self.say(message))
        os.write(1, (self.error_line(message) + "\n").encode())
        os._exit(EXIT_FAILED)


def load_lines(paths: list[str], *, max_lines: int | None, seed: int) -> list[str]:
    """All log lines of the data files; with max_lines, a seeded sample of them kept in file order."""
    import numpy as np

    from nulog.data import read_lines
    for p in paths:
        if not Path(p).is_file():
            raise UsageError(f"data file {p} does not exist")
    try:
        lines = list(read_lines(paths))
    except (OSError, EOFError) as e:
        raise UsageError(f"cannot read the data files: {e}") from e
    if not lines:
        raise UsageError("the data files hold no log lines")
    if max_lines is not None and len(lines) > max_lines:
        keep = np.sort(np.random.default_rng(seed).choice(len(lines), size=max_lines, replace=False))
        lines = [lines[i] for i in keep]
    return lines


def recipe(args: JobArgs) -> tuple[str, TrainConfig, ParseConfig]:
    """The architecture and the training and scoring settings of a job's model format, with its overrides."""
    overrides: dict[str, Any] = {"seed": args.seed}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.model_format == "opni":
        from nulog import opni_model as opni

        train = TrainConfig(**{"epochs": opni.EPOCHS, "batch_size": opni.BATCH_SIZE, "lr": opni.LR,
                               "weight_decay": opni.WEIGHT_DECAY, **overrides})
        return "opni", train, ParseConfig(k=args.k or opni.K, threshold=opni.THRESHOLD)
    return "nulog", TrainConfig(**overrides), ParseConfig(**({"k": args.k} if args.k is not None else {}))


class CheckpointStore:
    """The training's state under `--checkpoint`: a directory or an s3:// prefix holding CHECKPOINT_FILE."""

    def __init__(self, location: str, scratch: Path) -> None:
        from nulog import remote

        self.location = location.rstrip("/")
        self.remote = remote.is_remote(location)
        self.scratch = scratch

    def load(self) -> Checkpoint | None:
        """The last checkpoint written there, or None when there is none yet."""
        from nulog import remote
        from nulog.checkpoint import load_checkpoint

        if self.remote:
            try:
                path = remote.download(f"{self.location}/{CHECKPOINT_FILE}", self.scratch / "resume")
            except FileNotFoundError:
                return None
        else:
            path = Path(self.location) / CHECKPOINT_FILE
            if not path.is_file():
                return None
        return load_checkpoint(path)

    def save(self, ckpt: Checkpoint) -> None:
        from nulog import remote
        from nulog.checkpoint import save_checkpoint

        t0 = time.monotonic()
        if self.remote:
            path = self.scratch / CHECKPOINT_FILE
            save_checkpoint(path, ckpt)
            remote.upload_file(path, f"{self.location}/{CHECKPOINT_FILE}")
        else:
            Path(self.location).mkdir(parents=True, exist_ok=True)
            save_checkpoint(Path(self.location) / CHECKPOINT_FILE, ckpt)  # written aside, then renamed
        log.info("checkpoint of step %d written to %s in %.1f s", ckpt.step, self.location, time.monotonic() - t0)


def join(args: JobArgs, reporter: Reporter) -> tuple[World, torch.device]:
    """This process's place in the training (alone, or a rank that has met the others) and its device."""
    # torch is imported only once the arguments are valid, so a bad call fails in milliseconds.
    import torch

    from nulog.distributed import Group, Rendezvous, RendezvousError, World
    from nulog.train import resolve_device

    try:
        rdv = Rendezvous.from_env()
        device = resolve_device(args.device)
    except (RendezvousError, ValueError) as e:
        raise UsageError(str(e)) from e
    if rdv.world_size == 1:
        return World(), device
    if device.type == "cuda":
        device = torch.device("cuda", rdv.local_rank)
    reporter.stage("joining", f"waiting for the {rdv.world_size} workers at {rdv.master_addr}:{rdv.master_port}")
    world = Group.join(rdv, device=device, rendezvous_timeout_s=args.rendezvous_timeout_s,
                       peer_timeout_s=args.peer_timeout_s,
                       on_peer_lost=lambda message: reporter.die(f"training failed: {message}"))
    return world, device


def run(args: JobArgs, world: World, device: torch.device, reporter: Reporter) -> dict[str, Any]:
    """Load, train, save; returns the metrics (rank 0's; the other ranks': {})."""
    with tempfile.TemporaryDirectory(prefix=f"nulog-job-{args.job_id}-") as scratch:
        return _run_in(Path(scratch), args, device, world, reporter)


def _fetch_inputs(paths: tuple[str, ...], scratch: Path) -> list[str]:
    """Local paths of the data: remote objects are downloaded into `scratch`."""
    from nulog import remote

    local = []
    for i, path in enumerate(paths):
        if remote.is_remote(path):
            try:
                local.append(str(remote.download(path, scratch / f"data-{i}")))
            except FileNotFoundError as e:
                raise UsageError(f"data object {path} does not exist") from e
            except remote.RemoteConfigError as e:
                raise UsageError(str(e)) from e
        else:
            local.append(path)
    return local


def _run_in(scratch: Path, args: JobArgs, device: torch.device, world: World, reporter: Reporter) -> dict[str, Any]:
    from nulog import remote
    from nulog.train import CheckpointMismatch, Progress, train

    out = scratch / "output" if remote.is_remote(args.output) else Path(args.output)
    t0 = time.monotonic()

    reporter.stage("loading", f"reading {len(args.data)} data file(s)")
    lines = load_lines(_fetch_inputs(args.data, scratch), max_lines=args.max_lines, seed=args.seed)
    log.info("job %s: %d log lines loaded", args.job_id, len(lines))

    arch, config, parse = recipe(args)
    store = CheckpointStore(args.checkpoint, scratch) if args.checkpoint else None
    resume = store.load() if store is not None else None
    if resume is not None:
        reporter.stage("resuming", f"resuming from step {resume.step} of the checkpoint at {args.checkpoint}")
    workers = f" on {world.size} workers" if world.size > 1 else ""
    reporter.stage("training", f"training on {len(lines)} lines, {config.epochs} epochs, {device}{workers}")

    def progress(p: Progress) -> None:
        emit(
            ProgressEvent(
                epoch=p.epoch,
                epochs=p.epochs,
                step=p.step,
                steps=p.steps,
                loss=round(p.loss, 6),
                percent=round(min(100.0, p.percent), 2),
                elapsed_s=round(p.elapsed_s, 3),
                eta_s=round(max(0.0, p.eta_s), 3),
            )
        )

    try:
        result = train(lines, config, parse=parse, device=device, arch=arch, resume=resume, world=world,
                       on_progress=progress if world.is_main else None,
                       on_checkpoint=store.save if store is not None else None,
                       checkpoint_every_s=args.checkpoint_every_s)
    except CheckpointMismatch as e:
        raise UsageError(f"cannot resume from {args.checkpoint}: {e}") from e
    if not world.is_main:
        reporter.stage("done", "trained its share; rank 0 writes the model")
        return {}

    reporter.stage("saving", f"writing model files to {out}")
    out.mkdir(parents=True, exist_ok=True)
    _save(out, args, result, epochs=config.epochs)
    metrics = {
        "job_id": args.job_id,
        "model_format": args.model_format,
        "lines": result.lines,
        "unique_lines": result.distinct_lines,
        "sequences": result.sequences,
        "vocab_size": len(result.encoder.vocab),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "steps": result.steps,
        "resumed_from_step": result.start_step,
        "final_loss": result.final_loss,
        "seconds": round(time.monotonic() - t0, 3),
        "train_seconds": round(result.seconds, 3),
        "step_seconds": round(result.step_seconds, 3),
        # rank 0's CPU time in the steps (every rank does the same work): where other work takes the machine's
        # cores, step_seconds grows but this does not
        "step_cpu_seconds": round(result.step_cpu_seconds, 3),
        "device": result.device,
        "workers": world.size,
        "masked_tokens": result.masked_tokens,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "seed": args.seed,
        "k": parse.k,
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if remote.is_remote(args.output):
        reporter.stage("saving", f"uploading model files to {args.output}")
        remote.upload_dir(out, args.output)
    return metrics


def _save(out: Path, args: JobArgs, result: Any, *, epochs: int) -> tuple[str, ...]:
    """The model files of the job's format; returns the names of every artifact, metrics included."""
    from nulog.checkpoint import save_checkpoint, write_vocab

    ckpt = result.checkpoint
    if args.model_format == "opni":
        from nulog.opni_model import save_opni_checkpoint

        save_opni_checkpoint(out / MODEL_FILE, ckpt.model, ckpt.optimizer, epoch=epochs, loss=float(result.final_loss))
        ckpt.encoder.vocab.write(out / VOCAB_FILE)
        save_checkpoint(out / NATIVE_MODEL_FILE, ckpt, with_optimizer=False)  # for scoring: no optimizer state
    else:
        save_checkpoint(out / MODEL_FILE, ckpt)
        write_vocab(out / VOCAB_FILE, ckpt.encoder.vocab)
    return artifact_files(args.model_format)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reporter = Reporter.from_env()
    world: World | None = None
    try:
        args = JobArgs.from_argv(sys.argv[1:] if argv is None else argv)
        world, device = join(args, reporter)
        metrics = run(args, world, device, reporter)
        world.finish()  # every rank waits here until rank 0 has written the artifacts
        if world.is_main:
            emit(DoneEvent(metrics=metrics, files=artifact_files(args.model_format)))
        return EXIT_DONE
    except (UsageError, ProtocolError) as e:
        return _fail(reporter, str(e), EXIT_USAGE, world)
    except Exception as e:  # the contract: any failure becomes one error event and exit 1
        from nulog.distributed import PeerLost

        log.exception("training job failed")
        what = str(e) if isinstance(e, PeerLost) else f"{type(e).__name__}: {e}"
        return _fail(reporter, f"training failed: {what}", EXIT_FAILED, world)


def _fail(reporter: Reporter, message: str, code: int, world: World | None) -> int:
    log.error("%s", reporter.say(message))
    if world is None or world.size == 1:
        emit(ErrorEvent(message=reporter.say(message)))
        return code
    world.claim_report()  # the heartbeat's thread may be ending the process with its own report
    world.announce_failure(message)
    emit(ErrorEvent(message=reporter.say(message)))
    sys.stderr.flush()
    os._exit(code)  # without tearing down a process group whose peers may be gone


if __name__ == "__main__":
    sys.exit(main())
