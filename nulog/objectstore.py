"""The one MinIO client configuration, shared by the controller and the training job.

The controller reads it from its settings (`MINIO_SERVER_URL`, `MINIO_ACCESS_KEY`, `MINIO_SECRET_KEY`,
`MINIO_VERIFY_TLS`, `MINIO_CA_FILE`, the names Opni's deployments use), hands the same variables to every
training job it launches (the keys by reference to a Secret, never as values), and the job reads them back
with `MinioConfig.from_env`. Both build their client with `MinioConfig.client`, so a private CA or a
disabled verification reaches the training pod exactly as the controller was given it.

Torch-free and controller-free: the training image and the controller both import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from nulog.protocol import validation_problems

URL_VAR = "MINIO_SERVER_URL"
ACCESS_KEY_VAR = "MINIO_ACCESS_KEY"
SECRET_KEY_VAR = "MINIO_SECRET_KEY"
VERIFY_TLS_VAR = "MINIO_VERIFY_TLS"
CA_FILE_VAR = "MINIO_CA_FILE"
REGION_VAR = "MINIO_REGION"


class MinioConfigError(ValueError):
    """The configuration cannot make a client; the message names the variables, never a secret value."""


def parse_endpoint(url: str) -> tuple[str, bool]:
    """`http://minio:9000` → ("minio:9000", False); the scheme decides TLS. Raises ValueError if malformed."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError("the MinIO endpoint must be a URL starting with http:// or https://, e.g. http://minio:9000")
    if parts.username is not None or parts.password is not None:
        # The value is not echoed: it holds credentials.
        raise ValueError("the MinIO endpoint must not hold credentials; give the access and secret keys separately")
    if not parts.hostname:
        raise ValueError("the MinIO endpoint has no host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("the MinIO endpoint must be scheme://host[:port], without a path")
    return parts.netloc, parts.scheme == "https"


class MinioConfig(BaseModel):
    """How to reach MinIO (or any S3 endpoint): endpoint, keys and TLS."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    url: str | None = Field(default=None, alias="minio_server_url", description="MinIO/S3 endpoint URL.")
    access_key: SecretStr | None = Field(default=None, alias="minio_access_key")
    secret_key: SecretStr | None = Field(default=None, alias="minio_secret_key")
    verify_tls: bool = Field(default=True, alias="minio_verify_tls", description="TLS verification; turn off only by name.")
    ca_file: Path | None = Field(
        default=None, alias="minio_ca_file", description="CA bundle that signed MinIO's certificate."
    )

    region: str | None = Field(default=None, alias="minio_region", description="S3 region; None asks the server.")

    @field_validator("url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            parse_endpoint(value)
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MinioConfig:
        """The configuration in these environment variables; raises MinioConfigError naming what is wrong."""
        values = {k.lower(): v for k, v in env.items() if k.upper().startswith("MINIO_")}
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            problems = validation_problems(e, where=lambda loc: str(loc[0]).upper(), strip="Value error, ")
            raise MinioConfigError(problems) from None

    def missing(self) -> list[str]:
        """The variables a client needs and this configuration lacks."""
        return [
            name
            for name, value in ((URL_VAR, self.url), (ACCESS_KEY_VAR, self.access_key), (SECRET_KEY_VAR, self.secret_key))
            if not value or (isinstance(value, SecretStr) and not value.get_secret_value())
        ]

    def public_env(self) -> dict[str, str]:
        """The variables a training job gets as values: everything but the keys (those go by reference)."""
        env = {VERIFY_TLS_VAR: "true" if self.verify_tls else "false"}
        if self.url:
            env[URL_VAR] = self.url
        if self.ca_file is not None:
            env[CA_FILE_VAR] = str(self.ca_file)
        if self.region:
            env[REGION_VAR] = self.region
        return env

    def secret_env(self) -> dict[str, str]:
        """The keys as variables, for a job started where no Secret can hold them (the local launcher)."""
        env = {}
        if self.access_key is not None:
            env[ACCESS_KEY_VAR] = self.access_key.get_secret_value()
        if self.secret_key is not None:
            env[SECRET_KEY_VAR] = self.secret_key.get_secret_value()
        return env

    def client(self, *, timeout: float = 60.0, retries: int = 3):  # -> minio.Minio
        """A minio client with this endpoint, keys and TLS verification, and bounded timeouts and retries."""
        import certifi
        import urllib3
        from minio import Minio

        missing = self.missing()
        if missing:
            raise MinioConfigError(f"cannot reach the object store: {', '.join(missing)} is not set")
        assert self.url is not None and self.access_key is not None and self.secret_key is not None
        host, secure = parse_endpoint(self.url)
        # Our own pool: the client's default waits 5 minutes per try on a silent endpoint, and retries 5 times.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(10.0, timeout), read=timeout),
            maxsize=10,
            cert_reqs="CERT_REQUIRED" if self.verify_tls else "CERT_NONE",
            ca_certs=str(self.ca_file) if self.ca_file is not None else certifi.where(),
            retries=urllib3.Retry(
                total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504], raise_on_status=True
            ),
        )
        return Minio(
            host,
            access_key=self.access_key.get_secret_value(),
            secret_key=self.secret_key.get_secret_value(),
            secure=secure,
            region=self.region,
            http_client=http,
            cert_check=self.verify_tls,
        )
