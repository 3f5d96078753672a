"""The training-job entrypoint the controller launches (`python -m nulog.job`), in a container or locally.

Its stdout is a contract: only JSON objects, one per line, flushed at once (stage, progress, done or
error), because the controller parses them into job status. Human-readable logs go to stderr.
Exit codes: 0 done, 1 failed, 2 bad arguments or no usable input.

`--data` and `--output` may be local paths (the local launcher) or `s3://bucket/key` URIs (a Kubernetes Job,
reading and writing MinIO with the credentials in its environment): remote data is downloaded to a scratch
directory first, and remote output is uploaded once all its files are written.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nulog.config import ParseConfig, TrainConfig
from nulog.protocol import (
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_USAGE,
    METRICS_FILE,
    MODEL_FILE,
    NATIVE_MODEL_FILE,
    VOCAB_FILE,
    DoneEvent,
    ErrorEvent,
    JobArgs,
    ProgressEvent,
    ProtocolError,
    StageEvent,
    artifact_files,
    encode_event,
)

log = logging.getLogger("nulog.job")


class UsageError(Exception):
    """Bad arguments or no usable input: exit code 2."""


def emit(event: StageEvent | ProgressEvent | DoneEvent | ErrorEvent) -> None:
    """Write one event line to stdout and flush it."""
    sys.stdout.write(encode_event(event) + "\n")
    sys.stdout.flush()


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


def run(args: JobArgs) -> dict[str, Any]:
    """Load, train, save; returns the metrics."""
    # torch is imported only once the arguments are valid, so a bad call fails in milliseconds.
    from nulog.train import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from e
    with tempfile.TemporaryDirectory(prefix=f"nulog-job-{args.job_id}-") as scratch:
        return _run_in(Path(scratch), args, device)


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


def _run_in(scratch: Path, args: JobArgs, device: str) -> dict[str, Any]:
    from nulog import remote
    from nulog.train import Progress, train

    out = scratch / "output" if remote.is_remote(args.output) else Path(args.output)
    t0 = time.monotonic()

    emit(StageEvent(stage="loading", message=f"reading {len(args.data)} data file(s)"))
    lines = load_lines(_fetch_inputs(args.data, scratch), max_lines=args.max_lines, seed=args.seed)
    log.info("job %s: %d log lines loaded", args.job_id, len(lines))

    arch, config, parse = recipe(args)
    emit(StageEvent(stage="training", message=f"training on {len(lines)} lines, {config.epochs} epochs, {device}"))

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

    result = train(lines, config, parse=parse, device=device, arch=arch, on_progress=progress)

    emit(StageEvent(stage="saving", message=f"writing model files to {out}"))
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
        "final_loss": result.final_loss,
        "seconds": round(time.monotonic() - t0, 3),
        "train_seconds": round(result.seconds, 3),
        "device": result.device,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "seed": args.seed,
        "k": parse.k,
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if remote.is_remote(args.output):
        emit(StageEvent(stage="saving", message=f"uploading model files to {args.output}"))
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
    try:
        args = JobArgs.from_argv(sys.argv[1:] if argv is None else argv)
        metrics = run(args)
    except (UsageError, ProtocolError) as e:
        log.error("%s", e)
        emit(ErrorEvent(message=str(e)))
        return EXIT_USAGE
    except Exception as e:  # the contract: any failure becomes one error event and exit 1
        log.exception("training job failed")
        emit(ErrorEvent(message=f"training failed: {type(e).__name__}: {e}"))
        return EXIT_FAILED
    emit(DoneEvent(metrics=metrics, files=artifact_files(args.model_format)))
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
