"""The service's settings: the only place where environment variables are read.

Names are those Opni's deployments already use (`NATS_SERVER_URL`, `ES_ENDPOINT`, `MINIO_SERVER_URL`, ...),
plus the selectors `LOG_SOURCE`, `OBJECT_STORE` and `LAUNCHER`. `load_settings` reports every problem at
once, naming the variables, and never echoes a value (a value may be a secret).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Which settings each selected adapter needs.
_REQUIRED_BY: dict[tuple[str, str], tuple[str, ...]] = {
    ("log_source", "files"): ("log_files_dir",),
    ("log_source", "elasticsearch"): ("es_endpoint",),
    ("log_source", "opensearch"): ("es_endpoint",),
    ("object_store", "local"): ("local_store_dir",),
    ("object_store", "minio"): ("minio_server_url", "minio_access_key", "minio_secret_key"),
    ("launcher", "kubernetes"): ("nulog_train_image_name",),
}


class ConfigError(Exception):
    """The environment does not make a usable configuration; the message names every problem."""


class Settings(BaseSettings):
    """Configuration of the training controller, from the environment."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    nats_server_url: str = Field(min_length=1, description="NATS server to connect to, e.g. nats://nats:4222.")
    log_source: Literal["files", "elasticsearch", "opensearch"] = Field(default="files", description="Where logs come from.")
    object_store: Literal["local", "minio"] = Field(default="local", description="Where data and models are kept.")
    launcher: Literal["local", "kubernetes"] = Field(default="local", description="What runs the training job.")

    log_files_dir: Path | None = Field(default=None, description="files source: directory of JSONL log documents.")
    local_store_dir: Path | None = Field(default=None, description="local store: root directory of the buckets.")
    local_jobs_dir: Path | None = Field(default=None, description="local launcher: where job processes keep their files.")

    es_endpoint: str | None = Field(default=None, description="Elasticsearch/OpenSearch URL.")
    es_username: str | None = None
    es_password: SecretStr | None = None
    es_api_key: SecretStr | None = Field(default=None, description="API key instead of username and password.")
    es_ca_certs: Path | None = Field(default=None, description="CA bundle that signed the cluster's certificate.")
    es_verify_certs: bool = Field(default=True, description="TLS verification; turn off only by name.")
    es_index: str = Field(default="logs", min_length=1)
    es_timestamp_field: str = Field(default="timestamp", min_length=1)
    es_timestamp_unit: Literal["ns", "ms", "s", "iso"] = "ns"
    es_keyword_suffix: str = Field(default="", description="Suffix of the exact-value fields, e.g. `.keyword`.")
    es_page_size: int = Field(default=1000, ge=10, le=10_000)
    minio_server_url: str | None = Field(default=None, description="MinIO/S3 endpoint URL.")
    minio_access_key: SecretStr | None = None
    minio_secret_key: SecretStr | None = None
    minio_verify_tls: bool = Field(default=True, description="TLS verification; turn off only by name.")
    minio_ca_file: Path | None = Field(default=None, description="CA bundle that signed MinIO's certificate.")
    nulog_train_image_name: str | None = Field(default=None, description="Training image, without the tag.")
    nulog_train_image_tag: str = "latest"
    job_namespace: str = "default"
    train_gpu_resource: str = Field(default="nvidia.com/gpu", description="Extended resource of the GPU limit.")
    train_gpu_count: int = Field(default=1, ge=0, le=64, description="GPUs per training Job; 0 for none.")
    train_backoff_limit: int = Field(default=2, ge=0, le=20)
    train_active_deadline_seconds: int = Field(default=21_600, ge=60)
    train_ttl_seconds_after_finished: int = Field(default=86_400, ge=0)
    train_service_account: str | None = None
    credentials_secret_name: str = Field(default="training-controller", description="Secret with the MinIO keys.")

    s3_bucket: str = Field(default="opni-nulog-models", min_length=3, description="Bucket of the models.")
    training_bucket: str = Field(default="training-logs", min_length=3, description="Bucket of the training data.")
    window_seconds: int = Field(default=60, ge=1, le=86_400, description="Width of a training-data window.")
    max_documents: int | None = Field(default=None, ge=1, description="Cap on documents per training.")
    train_epochs: int = Field(default=3, ge=1, le=1_000)
    train_seed: int = Field(default=0, ge=0)
    train_max_lines: int | None = Field(default=None, ge=1, description="Cap on lines the model trains on.")
    train_device: Literal["auto", "cpu", "cuda"] = "auto"
    gpu_training_reset_time: float = Field(
        default=3600, gt=0, description="Seconds after which an external JobStart without JobEnd stops counting."
    )
    workload_lookback_seconds: int = Field(default=3600, ge=60, description="How far back train_model looks.")
    http_host: str = Field(default="0.0.0.0", description="Address of /healthz, /readyz and /metrics.")
    http_port: int = Field(default=8080, ge=0, le=65_535, description="Port of the HTTP surface; 0 picks a free one.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _adapter_settings_present(self) -> Settings:
        missing = missing_for_selectors(lambda name: getattr(self, name))
        if self.launcher == "kubernetes" and self.object_store == "local":
            missing.append("LAUNCHER=kubernetes needs OBJECT_STORE=minio: a training pod cannot read local files")
        if missing:
            raise ValueError("; ".join(missing))
        return self

    def jobs_dir(self) -> Path:
        """Where the local launcher keeps its jobs."""
        if self.local_jobs_dir is not None:
            return self.local_jobs_dir
        assert self.local_store_dir is not None
        return self.local_store_dir.parent / f"{self.local_store_dir.name}-jobs"


def missing_for_selectors(get: Any) -> list[str]:
    """`NAME is required when SELECTOR=value` for each setting the selected adapters need and lack."""
    problems = []
    for (selector, value), names in _REQUIRED_BY.items():
        if get(selector) == value:
            problems += [
                f"{name.upper()} is required when {selector.upper()}={value}" for name in names if get(name) in (None, "")
            ]
    return problems


def load_settings() -> Settings:
    """Settings from the environment; raises ConfigError naming every problem."""
    try:
        return Settings()
    except ValidationError as e:
        problems = []
        for item in e.errors(include_url=False, include_input=False):
            name = str(item["loc"][0]).upper() if item["loc"] else ""
            message = str(item["msg"]).removeprefix("Value error, ")
            if item["type"] == "missing":
                problems.append(f"{name} is required and not set")
            elif name:
                problems.append(f"{name}: {message}")
            else:
                problems.extend(message.split("; "))
        if not any("is required when" in p for p in problems):
            # Field errors stop pydantic before the cross-field check; run it on the raw values too.
            problems += missing_for_selectors(_raw_setting)
        raise ConfigError("invalid configuration: " + "; ".join(dict.fromkeys(problems))) from None


def _raw_setting(name: str) -> Any:
    value = next((v for k, v in os.environ.items() if k.lower() == name), None)
    if value is None:
        default = Settings.model_fields[name].default
        return default
    return value
