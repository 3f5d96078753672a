"""The `train` subject's payloads: this controller's and Opni's ES poller's (nanoseconds), opni-drain-service's
(milliseconds) and Opni's last training controller's (a search body), told apart by `decode_train`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from training_controller.core.opni_query import interpret
from training_controller.core.queries import Interval, LogQuery
from training_controller.messages.codec import PayloadError, describe, json_object

MAX_NS = 2**63 - 1
MAX_INTERVALS = 1_000

Nanoseconds = Annotated[StrictInt, Field(ge=0, le=MAX_NS, description="Nanoseconds since the Unix epoch.")]


class TimeInterval(BaseModel):
    """One time range of logs to train on, in nanoseconds since the epoch, end excluded."""

    start_ts: Nanoseconds = Field(description="Start of the range, nanoseconds since the epoch.")
    end_ts: Nanoseconds = Field(description="End of the range (excluded), nanoseconds since the epoch.")

    @model_validator(mode="after")
    def _start_before_end(self) -> TimeInterval:
        if self.start_ts >= self.end_ts:
            raise ValueError(f"start_ts ({self.start_ts}) must be before end_ts ({self.end_ts})")
        return self


class TrainRequest(BaseModel):
    """A request to train a model on the logs of some time ranges (subject `train`)."""

    model_config = ConfigDict(extra="forbid")

    model_to_train: str = Field(
        min_length=1, description="The model type to train (`nulog`, or one of the trainer catalogue)."
    )
    time_intervals: list[TimeInterval] = Field(
        min_length=1, max_length=MAX_INTERVALS, description="The time ranges whose logs make the training data."
    )
    parameters: dict[str, StrictInt | float | str | bool] | None = Field(
        default=None, description="The trainer's parameters, checked against its schema; defaults for the rest."
    )

    def to_query(self) -> LogQuery:
        """The log query this request asks for."""
        return LogQuery(intervals=tuple(Interval(start_ns=i.start_ts, end_ns=i.end_ts) for i in self.time_intervals))


Milliseconds = Annotated[StrictInt, Field(ge=0, le=MAX_NS // 1_000_000, description="Milliseconds since the epoch.")]


class DrainTrainRequest(BaseModel):
    """opni-drain-service's `train`: a stable period of the logs, in milliseconds since the epoch."""

    model_config = ConfigDict(extra="forbid")

    start_ts: Milliseconds
    end_ts: Milliseconds

    @model_validator(mode="after")
    def _start_before_end(self) -> DrainTrainRequest:
        if self.start_ts >= self.end_ts:
            raise ValueError(f"start_ts ({self.start_ts}) must be before end_ts ({self.end_ts})")
        return self

    def to_query(self) -> LogQuery:
        return LogQuery(intervals=(Interval(start_ns=self.start_ts * 1_000_000, end_ns=self.end_ts * 1_000_000),))


class OpniQueryTrainRequest(BaseModel):
    """The last Opni training controller's `train`: an OpenSearch search body, a cap, and the count it saw."""

    model_config = ConfigDict(extra="forbid")

    max_size: StrictInt = Field(ge=1, description="The most log documents to train on.")
    query: dict[str, Any] = Field(description="A search body for the `logs` index, run as it is.")
    count: StrictInt | None = Field(default=None, ge=0, description="How many documents matched when it was sent.")
    parameters: dict[str, Any] | None = Field(default=None, description="The gateway's {uuid, workloads}, if sent.")

    def to_query(self) -> LogQuery:
        found = interpret(self.query)
        if not found.intervals:
            found.not_understood.append("no time range on `time` (a files source needs one)")
        return LogQuery(
            intervals=tuple(found.intervals) or (Interval(start_ns=0, end_ns=MAX_NS),),
            workloads=tuple(found.workloads),
            exclude_anomalies=found.exclude_anomalies,
            exclude_keywords=tuple(found.exclude_keywords),
            max_documents=self.max_size,
            search=self.query,
            search_not_understood=tuple(found.not_understood),
        )


AnyTrainRequest = TrainRequest | DrainTrainRequest | OpniQueryTrainRequest


def decode_train(data: bytes) -> AnyTrainRequest:
    """A `train` payload in any shape Opni's components publish, told apart by its fields.

    `{"model_to_train", "time_intervals"}` (nanoseconds; this controller's and Opni's ES poller's),
    `{"max_size", "query", "count"}` (Opni's last training controller), `{"start_ts", "end_ts"}`
    (milliseconds; opni-drain-service). Anything else is refused with the shapes it could have been.
    """
    raw = json_object(data)
    hint = ""
    if "query" in raw or "max_size" in raw:
        model: type[BaseModel] = OpniQueryTrainRequest
    elif "start_ts" in raw and "end_ts" in raw and "time_intervals" not in raw:
        model = DrainTrainRequest
    else:
        model = TrainRequest
        if "model_to_train" not in raw and "time_intervals" not in raw:
            hint = " (or send Opni's {max_size, query, count}, or {start_ts, end_ts} in milliseconds)"
    try:
        return model.model_validate(raw)  # type: ignore[return-value]
    except ValidationError as e:
        raise PayloadError(describe(e) + hint) from None
