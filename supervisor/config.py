"""The worker's configuration: environment variables parsed once into typed settings.

A bad value stops the worker at start with one line naming the variable.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.policy import RestartPolicy

ENGINES = ("neonize", "sim")


class ConfigError(ValueError):
    """A configuration variable with an unusable value."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker reads from its environment."""

    host: str = "0.0.0.0"
    port: int = 8001
    worker_id: str = field(default_factory=socket.gethostname)
    worker_endpoint: str = "http://localhost:8001"
    max_sessions: int = 50
    worker_auth_token: str | None = None
    storage_dir: Path = Path("./data")
    database_path: Path = Path("./data/worker.db")
    engine: str = "neonize"
    sim_hub: str | None = None  # endpoint of a shared simulated network; unset: start our own hub
    sim_port: int = 8002  # HTTP control port of the hub we start ourselves
    sim_qr_ttl: float = 20.0
    log_level: str = "INFO"
    log_format: str = "auto"  # json | text | auto (text on a terminal)
    # Children beat this often; ~3 missed beats mean hung (a hang is caught within ~15 s).
    session_heartbeat_interval: float = 2.0
    session_heartbeat_liveness: int = 3
    # POST /session/create waits this long for the first QR.
    create_qr_wait: float = 3.0
    # Sessions from an earlier run start this far apart, so a restart does not reconnect all at once.
    start_stagger: float = 0.2
    send_timeout: float = 30.0
    sample_interval: float = 5.0  # psutil sampling period
    shutdown_timeout: float = 15.0
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)

    @property
    def run_dir(self) -> Path:
        return self.storage_dir / "run"


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _database_path(env: Mapping[str, str], storage_dir: Path) -> Path:
    raw = env.get("DATABASE_URL")
    if not raw:
        return storage_dir / "worker.db"
    if raw.startswith("sqlite:///"):
        return Path(raw.removeprefix("sqlite:///"))
    if raw.startswith("sqlite://"):
        raise ConfigError(f"DATABASE_URL={raw!r}: use sqlite:///relative/path or sqlite:////absolute/path")
    raise ConfigError(f"DATABASE_URL={raw!r}: only sqlite:/// URLs are supported")


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Parse settings from ``env`` (default: os.environ); raise ConfigError naming the bad variable."""
    env = os.environ if env is None else env
    port = _int(env, "PORT", 8001, minimum=0)
    if port > 65535:
        raise ConfigError(f"PORT={port} is not a TCP port")
    storage_dir = Path(env.get("STORAGE_DIR") or "./data")
    engine = env.get("WA_ENGINE") or "neonize"
    if engine not in ENGINES:
        raise ConfigError(f"WA_ENGINE={engine!r} must be one of {', '.join(ENGINES)}")
    level = (env.get("LOG_LEVEL") or "info").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"LOG_LEVEL={level.lower()!r} must be debug, info, warning or error")
    log_format = env.get("LOG_FORMAT") or "auto"
    if log_format not in ("json", "text", "auto"):
        raise ConfigError(f"LOG_FORMAT={log_format!r} must be json, text or auto")
    policy = RestartPolicy(
        backoff_initial=_float(env, "RESTART_BACKOFF_INITIAL", 0.1, minimum=0.0),
        backoff_max=_float(env, "RESTART_BACKOFF_MAX", 30.0, minimum=0.0),
        intensity=_int(env, "RESTART_INTENSITY", 5, minimum=1),
        period=_float(env, "RESTART_PERIOD", 60.0, minimum=1.0),
        start_secs=_float(env, "RESTART_START_SECS", 1.0),
        stable_secs=_float(env, "RESTART_STABLE_SECS", 10.0),
    )
    sim_port = _int(env, "SIM_PORT", 8002)
    return Settings(
        host=env.get("HOST") or "0.0.0.0",
        port=port,
        worker_id=env.get("WORKER_ID") or socket.gethostname(),
        worker_endpoint=env.get("WORKER_ENDPOINT") or f"http://localhost:{port}",
        max_sessions=_int(env, "MAX_SESSIONS", 50, minimum=1),
        worker_auth_token=env.get("WORKER_AUTH_TOKEN") or None,
        storage_dir=storage_dir,
        database_path=_database_path(env, storage_dir),
        engine=engine,
        sim_hub=env.get("SIM_HUB") or None,
        sim_port=sim_port,
        sim_qr_ttl=_float(env, "SIM_QR_TTL", 20.0, minimum=0.1),
        log_level=level,
        log_format=log_format,
        session_heartbeat_interval=_float(env, "SESSION_HEARTBEAT_INTERVAL", 2.0, minimum=0.05),
        session_heartbeat_liveness=_int(env, "SESSION_HEARTBEAT_LIVENESS", 3, minimum=2),
        create_qr_wait=_float(env, "CREATE_QR_WAIT", 3.0),
        start_stagger=_float(env, "START_STAGGER", 0.2),
        send_timeout=_float(env, "SEND_TIMEOUT", 30.0, minimum=0.1),
        sample_interval=_float(env, "SAMPLE_INTERVAL", 5.0, minimum=0.1),
        shutdown_timeout=_float(env, "SHUTDOWN_TIMEOUT", 15.0, minimum=0.1),
        restart_policy=policy,
    )
