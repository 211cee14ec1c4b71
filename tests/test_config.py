"""Configuration parsing and the worker token."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from harness import Worker, clean_env

from supervisor import worker_token
from supervisor.config import ConfigError, load


def test_defaults_follow_the_design() -> None:
    s = load({})
    assert (s.port, s.max_sessions, s.engine) == (8001, 50, "neonize")
    assert s.database_path == Path("data/worker.db")
    assert s.restart_policy.intensity == 5 and s.restart_policy.backoff_max == 30.0


def test_values_are_parsed() -> None:
    s = load(
        {
            "PORT": "9000",
            "MAX_SESSIONS": "7",
            "WA_ENGINE": "sim",
            "DATABASE_URL": "sqlite:////var/lib/wa/worker.db",
            "RESTART_INTENSITY": "2",
            "SESSION_HEARTBEAT_INTERVAL": "0.5",
        }
    )
    assert (s.port, s.max_sessions, s.engine) == (9000, 7, "sim")
    assert s.database_path == Path("/var/lib/wa/worker.db")
    assert s.restart_policy.intensity == 2 and s.session_heartbeat_interval == 0.5


@pytest.mark.parametrize(
    "env, names",
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MAX_SESSIONS": "0"}, "MAX_SESSIONS"),
        ({"WA_ENGINE": "baileys"}, "WA_ENGINE"),
        ({"DATABASE_URL": "postgres://x"}, "DATABASE_URL"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"SESSION_HEARTBEAT_INTERVAL": "fast"}, "SESSION_HEARTBEAT_INTERVAL"),
        ({"WORKER_ID": "a/b"}, "WORKER_ID"),  # it names object keys (workers/<id>/alive.json)
        # S3 refuses to sign for longer than 7 days: every incoming media upload would fail.
        ({"PRESIGN_EXPIRY": "604801"}, "PRESIGN_EXPIRY=604801.0 must be at most 604800"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load(env)


def test_token_is_generated_once_and_private(tmp_path: Path) -> None:
    token, generated = worker_token.resolve(None, tmp_path)
    assert generated and len(token) >= 32
    mode = stat.S_IMODE((tmp_path / worker_token.TOKEN_FILE).stat().st_mode)
    assert mode == 0o600
    again, generated_again = worker_token.resolve(None, tmp_path)
    assert (again, generated_again) == (token, False)
    assert worker_token.resolve("configured", tmp_path) == ("configured", False)


def test_workers_a_test_starts_inherit_no_configuration_from_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "MINIO_ENDPOINT": "minio.example:9000",
        "BACKEND_URL": "http://backend.example",
        "JWT_SECRET": "x" * 40,
        "ENCRYPTION_KEY": "y" * 40,
        "MAX_SESSIONS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    worker = Worker(tmp_path, {"MAX_SESSIONS": "7"})
    assert not {"MINIO_ENDPOINT", "BACKEND_URL", "JWT_SECRET", "ENCRYPTION_KEY"} & set(worker.env)
    assert worker.env["MAX_SESSIONS"] == "7" and worker.env["PATH"]
    assert "MINIO_ENDPOINT" not in clean_env(STORAGE_DIR=str(tmp_path))


def test_worker_refuses_to_start_with_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = clean_env(PORT="eighty", STORAGE_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["wa-worker: bad configuration: PORT='eighty' is not an integer"]


def test_the_edit_window_is_whatsapps_fifteen_minutes_unless_set() -> None:
    assert load({}).edit_window == 900.0
    assert load({"EDIT_WINDOW": "60"}).edit_window == 60.0
    with pytest.raises(ConfigError, match="EDIT_WINDOW"):
        load({"EDIT_WINDOW": "-1"})
