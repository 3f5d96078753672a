"""`nulog_predict`: log lines to the inference worker, their templates and scores back."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# What `nulog serve --announce-ready` prints on stdout once it answers nulog_predict; the controller's
# embedded child is waited for on it.
WORKER_READY_LINE = "nulog serve ready"
MAX_PREDICT_LINES = 10_000
MAX_PREDICT_LINE_CHARS = 20_000
LogLineText = Annotated[str, Field(max_length=MAX_PREDICT_LINE_CHARS)]


class PredictRequest(BaseModel):
    """Log lines to parse and score with the current model (subject `nulog_predict`, and /api/v1/predict)."""

    model_config = ConfigDict(extra="forbid")

    logs: list[LogLineText] = Field(
        min_length=1, max_length=MAX_PREDICT_LINES,
        description="Raw log lines; the worker masks them as the training data was masked.",
    )


class LinePrediction(BaseModel):
    """What the model says about one line."""

    log: str = Field(description="The line as it was sent.")
    masked: str = Field(description="The line with its variable values masked, as the model sees it.")
    template: str = Field(description="The line's template: its constant tokens, `<*>` where a value varies.")
    score: float = Field(ge=0, le=1, description="Share of the line's tokens the model predicted (1: all).")
    label: Literal["Normal", "Anomaly"] = Field(description="Anomaly when the score is below the model's threshold.")


class ModelRef(BaseModel):
    """Which model answered."""

    job_id: str | None = Field(description="The job that trained it, once a model_ready has named it.")
    sha256: str = Field(description="sha256 of the model file.")
    loaded_at: str = Field(description="When the worker loaded it, ISO-8601 UTC.")


class PredictReply(BaseModel):
    """The templates and scores of the lines of a `nulog_predict` request, in order."""

    model: ModelRef
    predictions: list[LinePrediction]


class PredictError(BaseModel):
    """A `nulog_predict` request the worker could not answer; `reason` says whether a model is missing."""

    error: str = Field(description="What went wrong, in a sentence.")
    reason: Literal["no_model", "invalid_request", "internal"]
