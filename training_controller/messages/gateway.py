"""What the Opni gateway and Opni's inference services exchange with the controller: the workloads to train
on (`train_model`, `model_workload_parameters`) and the model announcements (`model_ready`, `model_update`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from training_controller.messages.codec import PayloadError, describe, json_object

Name = Annotated[str, Field(min_length=1, max_length=253)]
WorkloadMap = dict[Name, dict[Name, Annotated[list[Name], Field(max_length=10_000)]]]
_WORKLOADS = TypeAdapter(WorkloadMap)


class TrainModelRequest(BaseModel):
    """The gateway's request to train on some workloads (subject `train_model`); no workloads means reset.

    The gateway sends `{"uuid": .., "workloads": {..}}`, and `{"uuid": ..}` to reset (Go's `omitempty`
    drops empty workloads); older gateways sent the bare workloads map, and `{}` to reset.
    """

    model_config = ConfigDict(extra="forbid")

    uuid: str | None = Field(default=None, max_length=256, description="The gateway's id of the request.")
    workloads: WorkloadMap = Field(default_factory=dict, description="cluster id -> namespace -> deployments.")


def decode_train_model(data: bytes) -> TrainModelRequest:
    """A `train_model` payload, wrapped or bare."""
    raw = json_object(data)
    try:
        if raw and set(raw) <= {"uuid", "workloads"} and ("uuid" in raw or isinstance(raw.get("workloads"), dict)):
            return TrainModelRequest.model_validate(raw)
        return TrainModelRequest(workloads=_WORKLOADS.validate_python(raw))
    except ValidationError as e:
        raise PayloadError(describe(e)) from None


class ModelWorkloadParameters(BaseModel):
    """What the model is (being) trained on (subject `model_workload_parameters`)."""

    workloads: WorkloadMap
    status_type: Literal["train", "update", "reset"]


class BucketFiles(BaseModel):
    """The names of a model's files in its bucket."""

    model_file: str
    vocab_file: str


class ModelReady(BaseModel):
    """A new model is in the bucket (subject `model_ready`)."""

    bucket: str
    bucket_files: BucketFiles
    job_id: str


class ModelUpdate(BaseModel):
    """The model is being trained or was reset (subject `model_update`).

    Careful: on `training` (and `reset`) Opni's inference services drop their model and delete every object
    of the models bucket; only these two statuses and the bucket payload are safe to publish there.
    """

    status: Literal["training", "reset"]


class ModelFiles(BaseModel):
    """A new model is in the bucket (subject `model_update`, the payload Opni's inference services reload on)."""

    bucket: str
    bucket_files: BucketFiles
