"""Settings from the environment: every problem named in one message, never a secret value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training_controller.config import _ENV_NAMES, ConfigError, Settings, load_settings

SECRET = "s3cr3t-value"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No variable that Settings reads, in any case, is left from the real environment."""
    names = set(_ENV_NAMES)
    for key in list(os.environ):
        if key.lower() in names:
            monkeypatch.delenv(key)
    return monkeypatch


def _valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NATS_SERVER_URL", "nats://127.0.0.1:4222")
    monkeypatch.setenv("LOG_FILES_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("LOCAL_STORE_DIR", str(tmp_path / "store"))


def test_nothing_set_names_every_required_setting_in_one_message():
    with pytest.raises(ConfigError) as info:
        load_settings()

    message = str(info.value)
    assert message.startswith("invalid configuration: ")
    assert "NATS_SERVER_URL is required" in message
    assert "LOG_FILES_DIR is required when LOG_SOURCE=files" in message
    assert "LOCAL_STORE_DIR is required when OBJECT_STORE=local" in message
    assert "\n" not in message


def test_wrong_type_and_missing_conditional_setting_are_both_named(clean_env, tmp_path: Path):
    clean_env.setenv("NATS_SERVER_URL", "nats://x:4222")
    clean_env.setenv("LOCAL_STORE_DIR", str(tmp_path))
    clean_env.setenv("WINDOW_SECONDS", "sixty")

    with pytest.raises(ConfigError) as info:
        load_settings()

    message = str(info.value)
    assert "WINDOW_SECONDS: Input should be a valid integer" in message
    assert "LOG_FILES_DIR is required when LOG_SOURCE=files" in message
    assert "LOCAL_STORE_DIR" not in message
    assert "sixty" not in message


def test_conditional_setting_alone_is_named(clean_env, tmp_path: Path):
    clean_env.setenv("NATS_SERVER_URL", "nats://x:4222")
    clean_env.setenv("LOG_FILES_DIR", str(tmp_path))

    with pytest.raises(ConfigError, match=r"^invalid configuration: LOCAL_STORE_DIR is required when OBJECT_STORE=local$"):
        load_settings()


def test_invalid_selector_is_named(clean_env, tmp_path: Path):
    _valid(clean_env, tmp_path)
    clean_env.setenv("LOG_SOURCE", "kafka")

    with pytest.raises(ConfigError) as info:
        load_settings()

    message = str(info.value)
    assert "LOG_SOURCE: Input should be 'files'" in message
    assert "kafka" not in message


def test_out_of_range_value_is_named(clean_env, tmp_path: Path):
    _valid(clean_env, tmp_path)
    clean_env.setenv("TRAIN_EPOCHS", "0")

    with pytest.raises(ConfigError, match=r"TRAIN_EPOCHS: Input should be greater than or equal to 1"):
        load_settings()


@pytest.mark.parametrize(("name", "bad"), [("TRAIN_DEVICE", "tpu"), ("WINDOW_SECONDS", "x"), ("LOG_SOURCE", "kafka")])
def test_secret_value_never_appears_in_the_error(clean_env, tmp_path: Path, name: str, bad: str):
    _valid(clean_env, tmp_path)
    clean_env.setenv("MINIO_SECRET_KEY", SECRET)
    clean_env.setenv("MINIO_ACCESS_KEY", SECRET + "-access")
    clean_env.setenv("ES_PASSWORD", SECRET + "-es")
    clean_env.setenv(name, bad)

    with pytest.raises(ConfigError) as info:
        load_settings()

    assert name in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_full_valid_environment_loads_and_hides_secrets(clean_env, tmp_path: Path):
    _valid(clean_env, tmp_path)
    clean_env.setenv("MINIO_SECRET_KEY", SECRET)
    clean_env.setenv("ES_PASSWORD", SECRET)
    clean_env.setenv("WINDOW_SECONDS", "30")
    clean_env.setenv("TRAIN_EPOCHS", "2")
    clean_env.setenv("TRAIN_MAX_LINES", "500")
    clean_env.setenv("TRAIN_DEVICE", "cpu")
    clean_env.setenv("LOG_LEVEL", "DEBUG")

    settings = load_settings()

    assert settings.nats.url == "nats://127.0.0.1:4222"
    assert settings.logs.files_dir == tmp_path / "logs"
    assert settings.store.local_dir == tmp_path / "store"
    t = settings.training
    assert (t.window_seconds, t.epochs, t.max_lines, t.device, settings.log_level) == (30, 2, 500, "cpu", "DEBUG")
    secret = settings.store.minio.secret_key
    assert secret is not None and secret.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert settings.jobs_dir() == tmp_path / "store-jobs"


def test_defaults_of_a_minimal_environment(clean_env, tmp_path: Path):
    _valid(clean_env, tmp_path)
    clean_env.setenv("LOCAL_JOBS_DIR", str(tmp_path / "jobs"))

    settings = load_settings()

    assert (settings.logs.kind, settings.store.kind, settings.launch.kind) == ("files", "local", "local")
    assert (settings.store.models_bucket, settings.store.training_bucket) == ("opni-nulog-models", "training-logs")
    assert settings.training.window_seconds == 60 and settings.training.max_documents is None
    assert settings.jobs_dir() == tmp_path / "jobs"


def test_serve_without_nats_server_url_exits_2_with_one_message():
    env = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}

    done = subprocess.run(
        [sys.executable, "-m", "training_controller", "serve"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("training-controller: invalid configuration: ")
    assert "NATS_SERVER_URL is required" in lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_sections_take_the_flat_names_and_unknown_names_are_an_error(tmp_path: Path):
    settings = Settings(nats_server_url="nats://x:4222", log_files_dir=tmp_path, local_store_dir=tmp_path,
                        train_epochs=4, minio_verify_tls=False, train_node_selector='{"gpu": "a100"}')

    assert settings.training.epochs == 4
    assert settings.store.minio.verify_tls is False
    assert settings.launch.kubernetes.node_selector == {"gpu": "a100"}
    with pytest.raises(ValueError, match="unknown setting.*TRAIN_EPOCS"):
        Settings(nats_server_url="nats://x:4222", log_files_dir=tmp_path, local_store_dir=tmp_path, train_epocs=4)


def test_every_variable_has_one_default_in_one_section():
    # A section is the one home of its variables: no name is read by two fields.
    assert len(_ENV_NAMES) == len(set(_ENV_NAMES))
    assert _ENV_NAMES["minio_ca_file"] == ("store", "minio", "ca_file")
    assert _ENV_NAMES["train_gpu_count"] == ("launch", "kubernetes", "gpu_count")


def test_the_readme_documents_every_setting():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()

    undocumented = sorted(name.upper() for name in _ENV_NAMES if f"`{name.upper()}" not in readme)

    assert undocumented == []
