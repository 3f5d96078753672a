"""bootstrap picks the adapters the settings name, and only those."""

from __future__ import annotations

from pathlib import Path

import pytest

from training_controller.adapters.logs.elasticsearch import ElasticsearchLogSource
from training_controller.adapters.logs.files import FilesLogSource
from training_controller.adapters.logs.opensearch import OpenSearchLogSource
from training_controller.bootstrap import build_log_source
from training_controller.config import ConfigError, Settings, load_settings


def settings(**values) -> Settings:
    return Settings(nats_server_url="nats://127.0.0.1:4222", local_store_dir=Path("/tmp/store"), **values)


@pytest.mark.parametrize(
    ("selector", "kind"), [("elasticsearch", ElasticsearchLogSource), ("opensearch", OpenSearchLogSource)]
)
async def test_search_backends_are_built_from_es_settings(selector: str, kind: type) -> None:
    source = build_log_source(
        settings(log_source=selector, es_endpoint="https://es.example:9200", es_username="u", es_password="pw-secret").logs
    )
    try:
        assert type(source) is kind
    finally:
        await source.close()


def test_files_source_is_the_default(tmp_path: Path) -> None:
    assert isinstance(build_log_source(settings(log_files_dir=tmp_path).logs), FilesLogSource)


def test_a_search_backend_without_an_endpoint_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ES_ENDPOINT", "LOG_FILES_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NATS_SERVER_URL", "nats://x:4222")
    monkeypatch.setenv("LOG_SOURCE", "opensearch")
    monkeypatch.setenv("LOCAL_STORE_DIR", "/tmp/store")
    monkeypatch.setenv("ES_PASSWORD", "pw-secret-value")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "ES_ENDPOINT is required when LOG_SOURCE=opensearch" in str(raised.value)
    assert "pw-secret-value" not in str(raised.value)


def test_minio_store_is_built_from_minio_settings() -> None:
    from training_controller.adapters.storage.minio import MinioObjectStore
    from training_controller.bootstrap import build_object_store

    store = build_object_store(
        settings(
            object_store="minio",
            log_files_dir=Path("/tmp/logs"),
            minio_server_url="http://minio:9000",
            minio_access_key="ak",
            minio_secret_key="sk-secret",
        ).store
    )
    assert isinstance(store, MinioObjectStore)
    assert store.uri("opni-nulog-models", "job1") == "s3://opni-nulog-models/job1"
    assert "sk-secret" not in repr(store)


def test_minio_without_credentials_names_each_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MINIO_SERVER_URL", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "LOCAL_STORE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NATS_SERVER_URL", "nats://x:4222")
    monkeypatch.setenv("LOG_FILES_DIR", "/tmp/logs")
    monkeypatch.setenv("OBJECT_STORE", "minio")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    for name in ("MINIO_SERVER_URL", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        assert f"{name} is required when OBJECT_STORE=minio" in str(raised.value)


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t0ken}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: training}}]
current-context: x
"""


def test_kubernetes_launcher_is_built_from_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training_controller.adapters.launchers.kubernetes import KubernetesLauncher
    from training_controller.bootstrap import build_launcher

    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    configured = settings(
            launcher="kubernetes",
            object_store="minio",
            log_files_dir=tmp_path,
            minio_server_url="http://minio:9000",
            minio_access_key="ak",
            minio_secret_key="sk",
            nulog_train_image_name="registry.example/nulog-train",
            nulog_train_image_tag="1.2",
            job_namespace="training",
    )
    launcher = build_launcher(configured.launch, configured.store)
    assert isinstance(launcher, KubernetesLauncher)
    assert launcher.image == "registry.example/nulog-train:1.2" and launcher.namespace == "training"


def test_kubernetes_launcher_with_a_local_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="LAUNCHER=kubernetes needs OBJECT_STORE=minio"):
        settings(launcher="kubernetes", log_files_dir=tmp_path, nulog_train_image_name="img")
