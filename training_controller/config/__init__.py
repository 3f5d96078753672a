"""The service's settings: the only place where environment variables are read.

One section per component (`nats`, `logs`, `store`, `launch`, `training`, `http`, `health`), each a frozen
model whose fields keep the variable names Opni's deployments already use (`NATS_SERVER_URL`, `ES_ENDPOINT`,
`MINIO_SERVER_URL`, ...) as aliases; the defaults live here, once. Adapters take their section. The MinIO
section is `nulog.objectstore.MinioConfig`, the same configuration the training job reads back.

`Settings(...)` takes either sections or the flat variable names in lower case (`nats_server_url=...`), as
tests like to write them; `load_settings` reads the environment and reports every problem at once, naming
the variables, and never echoes a value (a value may be a secret).

The package: `sections` (one model per component), `tokens` (API_TOKENS), `settings` (the root and
`load_settings`); every name is importable from `training_controller.config` itself.
"""

from __future__ import annotations

from nulog.objectstore import MinioConfig
from training_controller.config.sections import (
    ElasticsearchSettings,
    HealthSettings,
    HttpSettings,
    KubernetesSettings,
    LauncherSettings,
    LogSourceSettings,
    NatsSettings,
    StoreSettings,
    TrainingSettings,
)

# The variable names -> their place in the sections; private, but the README test reads it.
from training_controller.config.settings import _ENV_NAMES as _ENV_NAMES
from training_controller.config.settings import (
    ConfigError,
    Settings,
    load_settings,
    missing_for_selectors,
)
from training_controller.config.tokens import MIN_TOKEN_CHARS, ApiToken, TokenRole, parse_api_tokens

__all__ = [
    "ApiToken",
    "ConfigError",
    "ElasticsearchSettings",
    "HealthSettings",
    "HttpSettings",
    "KubernetesSettings",
    "LauncherSettings",
    "LogSourceSettings",
    "MIN_TOKEN_CHARS",
    "MinioConfig",
    "NatsSettings",
    "Settings",
    "StoreSettings",
    "TokenRole",
    "TrainingSettings",
    "load_settings",
    "missing_for_selectors",
    "parse_api_tokens",
]
