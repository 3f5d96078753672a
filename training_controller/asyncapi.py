"""The AsyncAPI document of the wire contract, generated from the pydantic models in `training_controller/messages/`.

`training-controller asyncapi --output docs/asyncapi.yaml` writes it; a test fails when the committed file
differs from what the models say, so the document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from training_controller import __version__
from training_controller.messages import (
    ErrorReply,
    JobLog,
    JobRequest,
    JobsPage,
    JobsRequest,
    ModelReady,
    ModelUpdate,
    ModelWorkloadParameters,
    PredictError,
    PredictReply,
    PredictRequest,
    TrainAccepted,
    TrainModelRequest,
    TrainRequest,
)

REF = "#/components/schemas/{model}"
MODELS: tuple[type[BaseModel], ...] = (
    TrainRequest,
    TrainAccepted,
    ErrorReply,
    TrainModelRequest,
    ModelWorkloadParameters,
    ModelReady,
    ModelUpdate,
    JobRequest,
    JobsRequest,
    JobsPage,
    JobLog,
    PredictRequest,
    PredictReply,
    PredictError,
)


def _text(*values: str, description: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": description}
    if values:
        schema["enum"] = list(values)
    return {"contentType": "text/plain", "payload": schema}


def _json(model: type[BaseModel] | None = None, *, description: str = "") -> dict[str, Any]:
    payload: dict[str, Any] = {"$ref": REF.format(model=model.__name__)} if model else {"type": "object"}
    message: dict[str, Any] = {"contentType": "application/json", "payload": payload}
    if description:
        message["description"] = description
    return message


# subject -> (what the controller does with it, description, message in, reply messages or None)
CONTRACT: list[tuple[str, str, str, dict[str, Any], list[dict[str, Any]] | None]] = [
    ("train", "receive", "Train a model on the logs of some time ranges; a JetStream stream keeps it while the "
     "controller is down. A reply is sent only when the message has a reply subject.",
     _json(TrainRequest), [_json(TrainAccepted), _json(ErrorReply)]),
    ("train_model", "receive", "The gateway's request to train on workloads; an empty payload resets the model.",
     _json(TrainModelRequest, description="Or the bare workloads object {cluster: {namespace: [deployment]}}."),
     [_text("training job submitted", "model reset", description="Plain bytes."), _json(ErrorReply)]),
    ("model_status", "receive", "Whether a model is being trained, ready, or not started.",
     _text(description="Anything."), [_text("training", "completed", "not started", description="Plain bytes.")]),
    ("workload_parameters", "receive", "The workloads the last model was trained on.",
     _text(description="Anything."), [_json(description="{cluster: {namespace: [deployment]}}")]),
    ("gpu_service_inference", "receive", "May inference use the GPU? YES forwards the bytes to "
     "gpu_service_inference_internal.", _text(description="Opaque bytes."), [_text("YES", "NO", description="Plain bytes.")]),
    ("gpu_service_inference_internal", "send", "An inference request granted the GPU, bytes unchanged.",
     _text(description="The bytes of the granted gpu_service_inference request."), None),
    ("gpu_service_running", "receive", "Health check of the GPU service.",
     _text("check-up", description="Plain bytes."), [_text("running", description="Plain bytes."), _json(ErrorReply)]),
    ("gpu_trainingjob_status", "send", "A training took (JobStart) or freed (JobEnd) the GPU; external trainers "
     "publish here too, and the controller counts their claims.", _text("JobStart", "JobEnd", description="Plain bytes."), None),
    ("model_workload_parameters", "send", "What the model is (being) trained on.", _json(ModelWorkloadParameters), None),
    ("model_update", "send", "A model is being trained, or was reset.", _json(ModelUpdate), None),
    ("model_ready", "send", "A new model is in the bucket.", _json(ModelReady), None),
    ("training_status", "receive", "One job's record.", _json(JobRequest),
     [_json(description="The job record."), _json(ErrorReply)]),
    ("training_jobs", "receive", "Recent jobs, most recent first, a page at a time.", _json(JobsRequest),
     [_json(JobsPage), _json(ErrorReply)]),
    ("training_cancel", "receive", "Cancel a queued or running job.", _json(JobRequest),
     [_json(description="The job record."), _json(ErrorReply)]),
    ("training_logs.{job_id}", "send", "Phase changes, trainer events (the trainer contract's stage, progress, "
     "done, error) and log lines of one job.", _json(JobLog), None),
    ("nulog_predict", "send", "Asked of the inference worker (`nulog serve`): templates, scores and labels of log "
     "lines from the current model; the controller's /api/v1/predict forwards here.", _json(PredictRequest),
     [_json(PredictReply), _json(PredictError)]),
]


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a dictionary."""
    _, schemas = models_json_schema([(m, "validation") for m in MODELS], ref_template=REF)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for subject, action, description, message_in, replies in CONTRACT:
        key = subject.replace(".{job_id}", "")
        messages[key] = message_in
        channel: dict[str, Any] = {
            "address": subject,
            "description": description,
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        if subject.endswith("{job_id}"):
            channel["parameters"] = {"job_id": {"description": "The job's id."}}
        channels[key] = channel
        operation: dict[str, Any] = {"action": action, "channel": {"$ref": f"#/channels/{key}"}}
        if replies:
            reply_key = f"{key}_reply"
            channels[reply_key] = {
                "address": None,
                "description": f"The requester's inbox for {subject} replies.",
                "messages": {f"{reply_key}_{i}": m for i, m in enumerate(replies)},
            }
            operation["reply"] = {"channel": {"$ref": f"#/channels/{reply_key}"}}
        operations[f"{action}_{key}"] = operation
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Training controller",
            "version": __version__,
            "description": "Opni-compatible NATS subjects of the NuLog training controller. Generated from "
            "training_controller/messages/ by `training-controller asyncapi`; do not edit by hand.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas.get("$defs", {})},
    }


def render() -> str:
    return yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=110)
