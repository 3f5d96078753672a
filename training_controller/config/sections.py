"""The service's settings, one frozen section per component: NATS, the log source, the store, the launcher,
the training, HTTP and health.

Each field keeps the variable name Opni's deployments already use (`NATS_SERVER_URL`, `ES_ENDPOINT`, ...) as
its alias, and its default lives here, once. The MinIO section is `nulog.objectstore.MinioConfig`, the same
configuration the training job reads back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from nulog.objectstore import MinioConfig
from training_controller.config.tokens import ApiToken, parse_api_tokens


def _seconds(default: float, env: str, what: str | None = None) -> Any:
    """A duration in seconds, read from `env`: any positive number."""
    return Field(default=default, alias=env, gt=0, description=what)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")


class NatsSettings(_Section):
    """The NATS connection and the train stream's consumer."""

    url: str = Field(alias="nats_server_url", min_length=1, description="NATS server, e.g. nats://nats:4222.")
    fetch_timeout_seconds: float = Field(
        default=5.0, alias="nats_fetch_timeout_seconds", gt=0, le=300,
        description="How long one pull of the train stream waits for messages before pulling again.",
    )
    request_timeout_seconds: float = Field(
        default=5.0, alias="nats_request_timeout_seconds", gt=0, le=120,
        description="How long a JetStream request (a key-value write) waits for its answer.",
    )


class ElasticsearchSettings(_Section):
    """An Elasticsearch or OpenSearch cluster and its `logs` index."""

    endpoint: str | None = Field(default=None, alias="es_endpoint", description="Elasticsearch/OpenSearch URL.")
    username: str | None = Field(default=None, alias="es_username")
    password: SecretStr | None = Field(default=None, alias="es_password")
    api_key: SecretStr | None = Field(default=None, alias="es_api_key", description="API key instead of a password.")
    ca_certs: Path | None = Field(default=None, alias="es_ca_certs", description="CA bundle of the cluster.")
    verify_certs: bool = Field(default=True, alias="es_verify_certs", description="TLS verification; off only by name.")
    index: str = Field(default="logs", alias="es_index", min_length=1)
    timestamp_field: str = Field(default="timestamp", alias="es_timestamp_field", min_length=1)
    timestamp_unit: Literal["ns", "ms", "s", "iso"] = Field(default="ns", alias="es_timestamp_unit")
    keyword_suffix: str = Field(default="", alias="es_keyword_suffix", description="Suffix of exact-value fields.")
    page_size: int = Field(default=1000, alias="es_page_size", ge=10, le=10_000)


class LogSourceSettings(_Section):
    """Where the training data comes from."""

    kind: Literal["files", "elasticsearch", "opensearch"] = Field(default="files", alias="log_source")
    files_dir: Path | None = Field(default=None, alias="log_files_dir", description="files: directory of JSONL documents.")
    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)


class StoreSettings(_Section):
    """Where training data and models are kept."""

    kind: Literal["local", "minio"] = Field(default="local", alias="object_store")
    local_dir: Path | None = Field(default=None, alias="local_store_dir", description="local: root of the buckets.")
    minio: MinioConfig = Field(default_factory=MinioConfig)
    models_bucket: str = Field(
        default="opni-nulog-models", alias="s3_bucket", min_length=3,
        description="Where Opni's inference services read the current model (its root) and empty on training.",
    )
    archive_bucket: str = Field(
        default="opni-nulog-models-archive", alias="archive_bucket", min_length=3,
        description="Every trained model, by job: kept apart, because inference services empty the models bucket.",
    )
    training_bucket: str = Field(default="training-logs", alias="training_bucket", min_length=3)


class KubernetesSettings(_Section):
    """The training Job on Kubernetes, and how long the launcher waits on the API."""

    image_name: str | None = Field(default=None, alias="nulog_train_image_name", description="Image, without the tag.")
    image_tag: str = Field(default="latest", alias="nulog_train_image_tag")
    namespace: str = Field(default="default", alias="job_namespace")
    gpu_resource: str = Field(default="nvidia.com/gpu", alias="train_gpu_resource")
    gpu_count: int = Field(default=1, alias="train_gpu_count", ge=0, le=64, description="GPUs per Job; 0 for none.")
    backoff_limit: int = Field(default=2, alias="train_backoff_limit", ge=0, le=20)
    active_deadline_seconds: int = Field(default=21_600, alias="train_active_deadline_seconds", ge=60)
    ttl_seconds_after_finished: int = Field(default=86_400, alias="train_ttl_seconds_after_finished", ge=0)
    service_account: str | None = Field(default=None, alias="train_service_account")
    credentials_secret: str | None = Field(
        default="training-controller", alias="credentials_secret_name", description="Secret with the MinIO keys."
    )
    access_key_key: str = Field(default="MINIO_ACCESS_KEY", alias="credentials_access_key_key")
    secret_key_key: str = Field(default="MINIO_SECRET_KEY", alias="credentials_secret_key_key")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="train_node_selector")
    tolerations: tuple[dict[str, Any], ...] = Field(default=(), alias="train_tolerations")
    image_pull_secrets: tuple[str, ...] = Field(default=(), alias="train_image_pull_secrets")
    image_pull_policy: str | None = Field(default=None, alias="train_image_pull_policy")
    resource_requests: dict[str, str] = Field(default_factory=dict, alias="train_resource_requests")
    run_as_user: int = Field(default=10001, alias="train_run_as_user", description="The trainer image's user.")
    request_timeout_seconds: float = _seconds(30.0, "kube_request_timeout_seconds")
    watch_timeout_seconds: int = Field(default=300, alias="kube_watch_timeout_seconds", ge=1)
    poll_seconds: float = _seconds(2.0, "kube_poll_seconds")
    log_drain_seconds: float = Field(default=30.0, alias="kube_log_drain_seconds", ge=0)
    # How long a cancel waits for the training's pods to stop before it reports a temporary error.
    cancel_timeout_seconds: float = _seconds(120.0, "kube_cancel_timeout_seconds")
    minio_ca_secret: str | None = Field(
        default=None, alias="minio_ca_secret",
        description="Secret holding MINIO_CA_FILE's bundle, under the file's name; mounted at MINIO_CA_FILE in the pod.",
    )
    minio_ca_config_map: str | None = Field(
        default=None, alias="minio_ca_config_map", description="ConfigMap instead of a Secret for the CA bundle.",
    )

    @field_validator("node_selector", "tolerations", "image_pull_secrets", "resource_requests", mode="before")
    @classmethod
    def _json_from_env(cls, value: Any) -> Any:
        # From the environment these arrive as JSON text.
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("minio_ca_config_map")
    @classmethod
    def _one_ca_source(cls, value: str | None, info: Any) -> str | None:  # info: pydantic's ValidationInfo
        if value and info.data.get("minio_ca_secret"):
            raise ValueError("set MINIO_CA_SECRET or MINIO_CA_CONFIG_MAP, not both: the CA bundle has one source")
        return value

    @property
    def image(self) -> str:
        return f"{self.image_name}:{self.image_tag}"


class LauncherSettings(_Section):
    """What runs the training job."""

    kind: Literal["local", "kubernetes", "kubeflow"] = Field(
        default="local", alias="launcher",
        description="kubernetes: batch/v1 Jobs; kubeflow: PyTorchJobs (needs the Kubeflow Training Operator).",
    )
    local_jobs_dir: Path | None = Field(default=None, alias="local_jobs_dir", description="local: the jobs' files.")
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    # How long a cancelled trainer may take to stop.
    cancel_grace_seconds: float = _seconds(10.0, "cancel_grace_seconds")


class TrainingSettings(_Section):
    """How trainings are queued, exported, run and watched."""

    epochs: int = Field(default=3, alias="train_epochs", ge=1, le=1_000)
    seed: int = Field(default=0, alias="train_seed", ge=0)
    max_lines: int | None = Field(default=None, alias="train_max_lines", ge=1, description="Lines the model trains on.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", alias="train_device")
    model_format: Literal["nulog", "opni"] = Field(
        default="nulog", alias="train_model_format",
        description="nulog: this project's model; opni: Opni's NuLog and files, for Opni's inference service.",
    )
    checkpoint_seconds: float = Field(
        default=300.0, alias="train_checkpoint_seconds", ge=1, le=86_400,
        description="How often a training writes its resumable state to the store.",
    )
    window_seconds: int = Field(default=60, alias="window_seconds", ge=1, le=86_400, description="Training-data window.")
    max_documents: int | None = Field(default=None, alias="max_documents", ge=1, description="Cap per training.")
    # Seconds after which an external JobStart without JobEnd stops counting.
    gpu_reset_seconds: float = _seconds(3600, "gpu_training_reset_time")
    # How often the GPU inference service is asked whether it runs (gpu_service_running).
    gpu_service_check_seconds: float = _seconds(2.0, "gpu_service_check_seconds")
    # How long it may take to answer.
    gpu_service_timeout_seconds: float = _seconds(1.0, "gpu_service_timeout_seconds")
    workload_lookback_seconds: int = Field(default=3600, alias="workload_lookback_seconds", ge=60)
    # How long temporary failures of a job's backends are retried before the job fails.
    job_deadline_seconds: float = _seconds(86_400, "job_deadline_seconds")
    progress_save_seconds: float = Field(default=2.0, alias="progress_save_seconds", ge=0)
    retention_count: int = Field(
        default=1000, alias="job_retention_count", ge=1, description="Ended job records kept, the most recent."
    )
    retention_days: float = Field(
        default=30.0, alias="job_retention_days", gt=0, description="Ended job records older than this are forgotten."
    )
    retry_max_seconds: float = _seconds(30.0, "retry_max_seconds", "Longest retry delay.")
    export_in_process: bool = Field(
        default=False, alias="export_in_process",
        description="Export in a thread of the controller instead of a child process (debugging only).",
    )
    max_workers: int = Field(
        default=4, alias="train_max_workers", ge=1, le=256,
        description="The most worker processes one NuLog training may use (the built-in trainer's max_workers).",
    )
    trainers: str | None = Field(
        default=None, alias="trainers",
        description="The trainer catalogue: a YAML or JSON file, or inline JSON; `nulog` is built in.",
    )


class HttpSettings(_Section):
    """The HTTP surface: probes and metrics (open), the REST API and the console (behind bearer tokens)."""

    host: str = Field(default="0.0.0.0", alias="http_host", description="Address of /healthz, /readyz, /metrics.")
    port: int = Field(default=8080, alias="http_port", ge=0, le=65_535, description="0 picks a free port.")
    api_tokens: SecretStr | None = Field(
        default=None, alias="api_tokens",
        description="Bearer tokens of /api and the console, `NAME:ROLE:TOKEN` separated by commas, ROLE ro or rw "
        "(from a Secret; never logged). None: every /api request is refused with 401.",
    )
    api_max_body_bytes: int = Field(
        default=1 << 20, alias="api_max_body_bytes", ge=1024, le=64 << 20,
        description="Largest request body; a larger one is refused with 413.",
    )
    # How long the training events stream keeps a job's events for /events to replay.
    api_events_max_age_seconds: float = _seconds(7 * 86_400.0, "api_events_max_age_seconds")
    inference_worker: Literal["auto", "child", "external"] = Field(
        default="auto", alias="inference_worker",
        description="Who answers /api/v1/predict: `child` starts `nulog serve` beside the controller, `external` "
        "is a worker of its own (a Deployment); `auto` is `child` with the local object store.",
    )
    predict_timeout_seconds: float = Field(
        default=30.0, alias="predict_timeout_seconds", gt=0, le=600,
        description="How long /api/v1/predict waits for the inference worker (its first answer loads the model).",
    )

    @field_validator("api_tokens")
    @classmethod
    def _tokens_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_api_tokens(value.get_secret_value())
        return value

    def tokens(self) -> tuple[ApiToken, ...]:
        """The API's tokens; empty when none are configured."""
        return parse_api_tokens(self.api_tokens.get_secret_value()) if self.api_tokens is not None else ()


class HealthSettings(_Section):
    """When the controller tells Kubernetes it is broken (liveness) or not ready."""

    restart_budget: int = Field(
        default=5, alias="task_restart_budget", ge=1,
        description="Crashes of one supervised task within the window after which /healthz fails.",
    )
    restart_window_seconds: float = _seconds(300.0, "task_restart_window_seconds")
    # A task down this long makes /healthz fail.
    task_down_seconds: float = _seconds(60.0, "task_down_seconds")
    # A worker with no progress on a job for this long makes /healthz fail.
    worker_stall_seconds: float = _seconds(3600.0, "worker_stall_seconds")
