"""The trainer contract: what the controller and a training job say to each other.

The controller starts a training job with arguments (`JobArgs`), reads the job's stdout as a stream of
events, one JSON object per line (`StageEvent`, `ProgressEvent`, `DoneEvent`, `ErrorEvent`), and finds the
model under the artifact names below. Both sides import this module and nothing else for these facts, so a
field renamed here is renamed for both, and a field changed on one side only fails validation on the other
(every model forbids unknown fields). The module is torch-free: the controller imports it.

    controller                                   training job (python -m nulog.job)
    JobArgs.to_argv()  ───── command line ─────►  JobArgs.from_argv()
    parse_event(line)  ◄──── stdout, JSON lines ─  encode_event(StageEvent | ProgressEvent | ...)
    MODEL_FILE, ...    ◄──── <output>/<files> ───  MODEL_FILE, ...

Exit codes: 0 done, 1 the training failed, 2 bad arguments or no usable input.

One training may run as N processes (PyTorch DDP): each gets the same arguments and the rendezvous variables
below, as `torchrun` sets them (WORLD_SIZE=N, RANK=0..N-1 or, on a Kubernetes Indexed Job,
JOB_COMPLETION_INDEX, LOCAL_RANK, MASTER_ADDR and MASTER_PORT of rank 0). Rank 0 writes the artifacts and
checkpoints and emits progress and done events; the other ranks emit stage and error events only, and every
message of a rank begins "rank R: ". The training succeeded when every rank exited 0; a rank that fails exits
non-zero with an error event, and so do its peers, promptly, naming it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# -- artifacts ----------------------------------------------------------------------------------------

MODEL_FILE = "nulog_model.pt"
VOCAB_FILE = "vocab.txt"
METRICS_FILE = "metrics.json"
ARTIFACT_FILES = (MODEL_FILE, VOCAB_FILE, METRICS_FILE)
# With `model_format="opni"`, MODEL_FILE and VOCAB_FILE are in the format of Opni's inference service (what the
# controller copies to the bucket root), and the same model is also written in this project's own checkpoint
# format under NATIVE_MODEL_FILE, which the project's scoring and inference load.
NATIVE_MODEL_FILE = "nulog_native.pt"
OPNI_ARTIFACT_FILES = (MODEL_FILE, VOCAB_FILE, METRICS_FILE, NATIVE_MODEL_FILE)
# The training's resumable state (weights, optimizer, step) under JobArgs.checkpoint, written by rank 0.
CHECKPOINT_FILE = "checkpoint.pt"
# Where Opni's inference service reads the current model: the models bucket's root.
LATEST_MODEL_FILE = "nulog_model_latest.pt"
LATEST_VOCAB_FILE = "vocab.txt"

# The training job's entrypoint: `python -m nulog.job <JobArgs.to_argv()>`, locally and in the image.
JOB_MODULE = "nulog.job"

# The rendezvous of a training across several workers, as `torchrun` sets it; on a Kubernetes Indexed Job
# the rank may come from JOB_COMPLETION_INDEX instead.
WORLD_SIZE_VAR, RANK_VAR, LOCAL_RANK_VAR = "WORLD_SIZE", "RANK", "LOCAL_RANK"
MASTER_ADDR_VAR, MASTER_PORT_VAR = "MASTER_ADDR", "MASTER_PORT"
COMPLETION_INDEX_VAR = "JOB_COMPLETION_INDEX"
DEFAULT_MASTER_PORT = 29500

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Device = Literal["auto", "cpu", "cuda"]
ModelFormat = Literal["nulog", "opni"]


def artifact_files(model_format: ModelFormat) -> tuple[str, ...]:
    """The files a job of this model format writes at its output."""
    return OPNI_ARTIFACT_FILES if model_format == "opni" else ARTIFACT_FILES


def validation_problems(error: ValidationError, *, where: Callable[[tuple[int | str, ...]], str],
                        strip: str = "") -> str:
    """A ValidationError as `where: what` per problem, joined by "; ": `where` names a problem's location,
    and `strip` is a prefix cut from its message."""
    return "; ".join(
        f"{where(item['loc'])}: {str(item['msg']).removeprefix(strip)}"
        for item in error.errors(include_url=False, include_input=False)
    )


class ProtocolError(ValueError):
    """A line or a command line that claims to follow the contract and does not."""


# -- arguments ----------------------------------------------------------------------------------------


class JobArgs(BaseModel):
    """The arguments of one training job, as the controller gives them and the job reads them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(min_length=1, description="The controller's id of the job.")
    data: tuple[str, ...] = Field(min_length=1, description="Training data: local paths or s3:// URIs.")
    output: str = Field(min_length=1, description="Where the artifacts go: a directory or an s3:// prefix.")
    epochs: int | None = Field(default=None, ge=1, le=10_000, description="Training epochs; None: the model's default.")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    device: Device = "auto"
    max_lines: int | None = Field(
        default=None, ge=1, le=1_000_000_000, description="Train on a seeded sample of this many lines."
    )
    k: int | None = Field(default=None, ge=1, le=10_000, description="Top-k of template extraction and scoring; None: the model format's default.")
    batch_size: int | None = Field(
        default=None, ge=1, le=65_536,
        description="Lines drawn per optimisation step over all workers together (the global batch; each worker "
                    "takes its share); None: the model format's default.",
    )
    model_format: ModelFormat = Field(
        default="nulog",
        description="nulog: this project's model; opni: Opni's NuLog architecture and files (nulog_model.pt, "
                    "vocab.txt as Opni's inference service loads them) and the native checkpoint beside them.",
    )
    checkpoint: str | None = Field(
        default=None, min_length=1,
        description="A directory or s3:// prefix for the resumable training state: written every "
                    "checkpoint_every_s by rank 0, and resumed from when the job starts again with it.",
    )
    checkpoint_every_s: float = Field(default=300.0, ge=1.0, le=86_400.0, description="Seconds between checkpoints.")
    rendezvous_timeout_s: float = Field(
        default=600.0, ge=1.0, le=3_600.0,
        description="With several workers: how long a rank waits for all of them to join.",
    )
    peer_timeout_s: float = Field(
        default=60.0, ge=2.0, le=3_600.0,
        description="With several workers: a peer silent this long is taken for dead and this rank fails.",
    )

    def to_argv(self) -> list[str]:
        """The command-line arguments that `from_argv` reads back to this value."""
        argv: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            flag = "--" + name.replace("_", "-")
            argv += [flag, *value] if isinstance(value, tuple) else [flag, str(value)]
        return argv

    def command(self, python: str = "python") -> list[str]:
        """The whole command line of the job with this interpreter."""
        return [python, "-m", JOB_MODULE, *self.to_argv()]

    @classmethod
    def from_argv(cls, argv: list[str]) -> JobArgs:
        """Parse a command line; raises ProtocolError naming what is wrong."""
        try:
            namespace = _parser().parse_args(argv)
            return cls.model_validate({k: v for k, v in vars(namespace).items() if v is not None})
        except ValidationError as e:
            problems = "; ".join(
                f"--{'.'.join(str(p) for p in item['loc']).replace('_', '-')}: {item['msg']}"
                for item in e.errors(include_url=False, include_input=False)
            )
            raise ProtocolError(f"bad arguments: {problems}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ProtocolError(f"bad arguments: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m nulog.job", description="Train a NuLog model for the training controller.")
    for name, field in JobArgs.model_fields.items():
        flag = "--" + name.replace("_", "-")
        required = field.is_required()
        if name == "data":
            p.add_argument(flag, nargs="+", required=True, help=field.description)
        else:
            p.add_argument(flag, required=required, default=None, help=field.description)
    return p


# -- events -------------------------------------------------------------------------------------------


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StageEvent(_Event):
    """The job moved to a stage of its own: loading, training, saving."""

    event: Literal["stage"] = "stage"
    stage: str
    message: str = ""


class ProgressEvent(_Event):
    """Where the training stands; sent about once a second and at the end of every epoch."""

    event: Literal["progress"] = "progress"
    stage: str = "training"
    epoch: int = Field(ge=0)
    epochs: int = Field(ge=0)
    step: int = Field(ge=0)
    steps: int = Field(ge=0)
    loss: float
    percent: float = Field(ge=0, le=100)
    elapsed_s: float = Field(ge=0, description="Seconds since the job started.")
    eta_s: float = Field(ge=0, description="Seconds the training is expected to take still.")


class DoneEvent(_Event):
    """The job wrote its artifacts and ends with exit code 0."""

    event: Literal["done"] = "done"
    metrics: dict[str, Any] = Field(default_factory=dict)
    files: tuple[str, ...] = ARTIFACT_FILES


class ErrorEvent(_Event):
    """The job failed; its exit code follows."""

    event: Literal["error"] = "error"
    message: str


TrainerEvent = Annotated[StageEvent | ProgressEvent | DoneEvent | ErrorEvent, Field(discriminator="event")]
_EVENT: TypeAdapter[TrainerEvent] = TypeAdapter(TrainerEvent)


def encode_event(event: StageEvent | ProgressEvent | DoneEvent | ErrorEvent) -> str:
    """One event as the compact JSON line the job writes (without the newline)."""
    return json.dumps(event.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False)


def parse_event(line: str | bytes) -> TrainerEvent | None:
    """The event a stdout line holds, or None for a line that is not an event (a human log line).

    Raises ProtocolError for a line that is a JSON object with an `event` key but does not match the
    contract: the two sides disagree, and saying so beats reading zeros.
    """
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or "event" not in data:
        return None
    try:
        return _EVENT.validate_python(data)
    except ValidationError as e:
        problems = validation_problems(e, where=lambda loc: ".".join(str(p) for p in loc) or "event")
        raise ProtocolError(f"trainer event does not follow the contract: {problems}") from None
