"""The worker's configuration: environment variables parsed once into typed settings.

A bad value stops the worker at start with one line naming the variable.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common import event_loop
from supervisor.messaging.pacing import PacingPolicy
from supervisor.supervision.policy import RestartPolicy

ENGINES = ("neonize", "sim")
# The longest validity S3 (and MinIO) accept for a presigned URL, seconds.
PRESIGN_EXPIRY_MAX = 7 * 24 * 3600


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
    sim_qr_max: int = 6  # QR codes per login attempt, then qr_timeout (WhatsApp shows 6)
    # Login attempts (rounds of QR codes) without a scan before a session rests until asked again.
    qr_cycles: int = 2
    log_level: str = "INFO"
    log_format: str = "auto"  # json | text | auto (text on a terminal)
    # Children beat this often; ~3 missed beats mean hung (at the defaults a hang is caught within ~8 s).
    session_heartbeat_interval: float = 2.0
    session_heartbeat_liveness: int = 3
    # POST /session/create waits this long for the first QR.
    create_qr_wait: float = 3.0
    # Sessions from an earlier run start this far apart, so a restart does not reconnect all at once.
    start_stagger: float = 0.2
    # POST /send waits this long for the network's confirmation, then answers 202 pending.
    send_timeout: float = 10.0
    send_attempt_timeout: float = 15.0  # one try of one message in a session process
    message_ttl: float = 3600.0  # an accepted message not sent by then becomes failed
    # The worker-wide pace of each session's sends (supervisor/messaging/pacing.py); a session's own
    # settings override it. By default only first messages to new chats are spaced.
    pacing: PacingPolicy = field(default_factory=PacingPolicy)
    # PATCH /messages/{id} refuses (EDIT_WINDOW_EXPIRED) an edit of a message older than this: WhatsApp's 15 minutes.
    edit_window: float = 900.0
    sample_interval: float = 5.0  # psutil sampling period
    # A session process whose resident memory passes this many MB is killed ("memory limit") and
    # restarted like a crash, before one leaking session gets the whole pod OOM-killed; 0: no limit.
    # Resident, not virtual: Go reserves large address ranges it never touches (RLIMIT_AS would kill it).
    session_memory_limit_mb: float = 512.0
    # Less free space than this on STORAGE_DIR's disk shows as a warning (/health degraded, lowSpace in
    # /health and the heartbeat, wa_worker_disk_free_bytes) before writes are refused with 507.
    disk_free_warn_mb: float = 256.0
    # How session processes start: exec (a new interpreter each) or zygote (forked from a pre-warmed process).
    spawner: str = "zygote"
    # The event loop of every process (common/event_loop.py; children read EVENT_LOOP themselves).
    event_loop: str = event_loop.DEFAULT
    shutdown_timeout: float = 15.0
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    # API: Bearer JWTs (HS256) are accepted when set; request bodies past MAX_UPLOAD_MB answer 413.
    jwt_secret: str | None = None
    jwt_audience: str | None = None  # a JWT must name this `aud` when set
    jwt_issuer: str | None = None  # a JWT must name this `iss` when set
    # A JWT may live at most this long (exp - iat, or exp - now without iat); 0: any. A token that
    # lives for years is a stolen key for years.
    jwt_max_lifetime: float = 86400.0
    max_upload_mb: float = 16.0
    # A received attachment larger than this is not downloaded: the message is kept without it
    # (mediaError "too_large"). neonize holds a whole download in memory (~3x its size at the peak:
    # Go's buffer, Python's bytes, the file write), so 64 MB peaks near 200 MB in one session process:
    # a few at once still fit beside 50 idle sessions (~1.1 GB) in the 3 GiB pod limit, and it covers
    # every image, voice note and WhatsApp-compressed video; larger documents go without their file.
    max_incoming_media_mb: float = 64.0
    # History older than this many days is deleted with its media (never a message still in the
    # outbox); None keeps history for ever.
    message_retention_days: float | None = None
    backend_url: str | None = None  # the gateway this worker reports to; /health checks it is reachable
    # Per minute; 0 switches a limit off. Sends per session: WhatsApp bans accounts that blast.
    # A guard against runaway clients only: a burst within it is accepted and paced by the outbox.
    rate_limit_send_per_session: int = 1000
    # Session operations (create, restart, logout, pair-code, delete) per client credential, once its
    # burst is spent: a token bucket of `rate_limit_session_ops_burst`, so a backend moving all of a
    # dead worker's sessions here at once is not refused. Default burst: twice MAX_SESSIONS (at least
    # the per-minute rate).
    rate_limit_session_ops: int = 30
    rate_limit_session_ops_burst: int = 100
    # -- deployment: the seed's variables, same names (README, Configuration; parsed by _deployment) --
    backend_heartbeat_interval: float = 30.0  # seconds; HEARTBEAT_INTERVAL is milliseconds, as in the seed
    minio_endpoint: str | None = None  # host name only; unset: object storage on the local filesystem
    minio_port: int = 9000
    minio_access_key: str | None = None
    minio_secret_key: str | None = field(default=None, repr=False)  # secrets stay out of reprs and logs
    minio_use_ssl: bool = False
    # Where clients reach MinIO, when not at MINIO_ENDPOINT (e.g. an ingress): media URLs are signed for it.
    minio_public_url: str | None = None
    encryption_key: str | None = field(default=None, repr=False)  # encrypts auth-state backups when set
    log_file_path: Path | None = None  # directory for error.log and combined.log (rotated); unset: stderr only
    log_file_max_bytes: int = 10 * 1024 * 1024
    log_file_backups: int = 5
    # SIGTERM: finish sends, flush, back up, stop sessions within this many seconds, then exit anyway.
    drain_timeout: float = 30.0
    # -- object storage (docs/architecture.md, Storage layout; parsed by _storage) --
    sessions_bucket: str = "whatsapp-sessions"
    media_bucket: str = "whatsapp-media"
    # A session's lease lapses this long after its worker stopped renewing it (renewed every third). Failover
    # waits for the holder's liveness record (WORKER_ALIVE_TTL), not this: the TTL only bounds a holder that
    # keeps no record, and each renewal is one write per session (500 sessions at 15 s: 100 writes a second).
    lease_ttl: float = 60.0
    # A worker's liveness record lapses this long after its last renewal (every third of it); then other
    # workers may take its sessions' leases over at once. Clocks must agree well within it.
    worker_alive_ttl: float = 3.0
    presign_expiry: float = 3600.0  # seconds a media URL in an API answer stays valid (at most 7 days)
    backup_debounce: float = 1.0  # a credentials change is backed up once it has been quiet this long
    # how often a running session's auth files are compared with its last backup (and backed up when
    # they changed): the most auth state a failover after a SIGKILL can lose
    backup_interval: float = 30.0
    backup_retry_max: float = 10.0  # failed backups retry with backoff up to this many seconds apart
    # -- events (GET /events, SSE, backend feed, webhooks) --
    event_retention: float = 72 * 3600.0  # seconds an event stays replayable with ?since=
    # Webhooks may reach loopback, private and link-local addresses: development only (docs/security.md).
    webhook_allow_private: bool = False

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


def _float(
    env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} must be at most {maximum}")
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


def _http_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if not raw:
        return None
    parsed = urlsplit(raw)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{name}={raw!r} must be an http:// or https:// URL with a host")
    return raw.rstrip("/")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be true or false")


def _secret(env: Mapping[str, str], name: str, *, min_length: int) -> str | None:
    # The value itself never appears in an error: this line ends up in logs.
    raw = env.get(name)
    if not raw:
        return None
    if len(raw) < min_length:
        raise ConfigError(f"{name} is too short: use at least {min_length} characters")
    return raw


def _deployment(env: Mapping[str, str]) -> dict[str, Any]:
    """The deployment variables (backend, MinIO, keys, log files, drain) as Settings fields."""
    minio_endpoint = env.get("MINIO_ENDPOINT") or None
    if minio_endpoint is not None and ("://" in minio_endpoint or "/" in minio_endpoint):
        raise ConfigError(
            f"MINIO_ENDPOINT={minio_endpoint!r} must be a host name only (MINIO_PORT and MINIO_USE_SSL say the rest)"
        )
    minio_port = _int(env, "MINIO_PORT", 9000, minimum=1)
    if minio_port > 65535:
        raise ConfigError(f"MINIO_PORT={minio_port} is not a TCP port")
    access_key = env.get("MINIO_ACCESS_KEY") or None
    secret_key = env.get("MINIO_SECRET_KEY") or None
    if minio_endpoint is not None:
        for name, value in (("MINIO_ACCESS_KEY", access_key), ("MINIO_SECRET_KEY", secret_key)):
            if value is None:
                raise ConfigError(f"{name} is required when MINIO_ENDPOINT is set")
    public_url = _http_url(env, "MINIO_PUBLIC_URL")
    if public_url is not None:
        parts = urlsplit(public_url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            # S3 signs the path: a prefix added by a proxy would break every signature.
            raise ConfigError(f"MINIO_PUBLIC_URL={public_url!r} must be a scheme and host[:port] only, no path")
    if "ENCRYPTION_KEY" in env and not env["ENCRYPTION_KEY"].strip():
        # An empty key in a Secret is a mistake, not a wish for plain backups: fail closed.
        raise ConfigError("ENCRYPTION_KEY is set but empty: set a key of 32+ characters, or unset it")
    encryption_key = _secret(env, "ENCRYPTION_KEY", min_length=32)
    allow_unencrypted = _bool(env, "ALLOW_UNENCRYPTED_BACKUPS", False)
    if minio_endpoint is not None and encryption_key is None and not allow_unencrypted:
        # Backups in a shared store hold every session's WhatsApp keys.
        raise ConfigError(
            "ENCRYPTION_KEY is required when MINIO_ENDPOINT is set (backups hold WhatsApp keys);"
            " ALLOW_UNENCRYPTED_BACKUPS=true stores them in the clear"
        )
    log_file_path = Path(env["LOG_FILE_PATH"]) if env.get("LOG_FILE_PATH") else None
    if log_file_path is not None and log_file_path.exists() and not log_file_path.is_dir():
        raise ConfigError(f"LOG_FILE_PATH={str(log_file_path)!r} must be a directory (error.log, combined.log)")
    heartbeat_ms = _int(env, "HEARTBEAT_INTERVAL", 30000, minimum=100)
    _http_url(env, "BACKEND_URL")  # validated here; the field is read in load()
    return {
        "backend_heartbeat_interval": heartbeat_ms / 1000.0,
        "minio_endpoint": minio_endpoint,
        "minio_port": minio_port,
        "minio_access_key": access_key,
        "minio_secret_key": secret_key,
        "minio_use_ssl": _bool(env, "MINIO_USE_SSL", False),
        "minio_public_url": public_url,
        # 32 characters: a 256-bit key in hex or base64, or a passphrase long enough to derive one.
        "encryption_key": encryption_key,
        "log_file_path": log_file_path,
        "log_file_max_bytes": _int(env, "LOG_FILE_MAX_BYTES", 10 * 1024 * 1024, minimum=1024),
        "log_file_backups": _int(env, "LOG_FILE_BACKUPS", 5, minimum=1),
        "drain_timeout": _float(env, "DRAIN_TIMEOUT", 30.0, minimum=1.0),
    }


def _worker_id(env: Mapping[str, str]) -> str:
    """WORKER_ID (default: the host name): it names object keys and log fields, so no '/' or spaces."""
    value = env.get("WORKER_ID") or socket.gethostname()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
        raise ConfigError(f"WORKER_ID={value!r} must be 1-128 of A-Z, a-z, 0-9, '.', '_', '-'")
    return value


def _storage(env: Mapping[str, str]) -> dict[str, Any]:
    """Buckets, leases, media URLs and backup timing as Settings fields."""
    buckets = {}
    for name, default in (("MINIO_SESSIONS_BUCKET", "whatsapp-sessions"), ("MINIO_MEDIA_BUCKET", "whatsapp-media")):
        value = env.get(name) or default
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
            raise ConfigError(f"{name}={value!r} is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')")
        buckets[name] = value
    return {
        "sessions_bucket": buckets["MINIO_SESSIONS_BUCKET"],
        "media_bucket": buckets["MINIO_MEDIA_BUCKET"],
        "lease_ttl": _float(env, "LEASE_TTL", 60.0, minimum=1.0),
        "worker_alive_ttl": _float(env, "WORKER_ALIVE_TTL", 3.0, minimum=1.0),
        # S3 signs URLs for at most 7 days: a longer expiry makes every media upload fail.
        "presign_expiry": _float(env, "PRESIGN_EXPIRY", 3600.0, minimum=1.0, maximum=PRESIGN_EXPIRY_MAX),
        "backup_debounce": _float(env, "BACKUP_DEBOUNCE", 1.0),
        "backup_interval": _float(env, "BACKUP_INTERVAL", 30.0, minimum=1.0),
        "backup_retry_max": _float(env, "BACKUP_RETRY_MAX", 10.0, minimum=0.1),
    }


def _retention_days(env: Mapping[str, str]) -> float | None:
    """MESSAGE_RETENTION_DAYS: unset, empty or 0 keeps history for ever."""
    days = _float(env, "MESSAGE_RETENTION_DAYS", 0.0, minimum=0.0)
    return days or None


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
    spawner = env.get("SPAWNER") or "zygote"
    if spawner not in ("exec", "zygote"):
        raise ConfigError(f"SPAWNER={spawner!r} must be exec or zygote")
    try:
        loop = event_loop.chosen(dict(env))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
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
    max_sessions = _int(env, "MAX_SESSIONS", 50, minimum=1)
    session_ops = _int(env, "RATE_LIMIT_SESSION_OPS", 30)
    jwt_secret = env.get("JWT_SECRET") or None
    if jwt_secret is not None and len(jwt_secret) < 32:
        # HS256 with a short secret can be brute-forced offline from one captured token.
        raise ConfigError("JWT_SECRET must be at least 32 characters")
    return Settings(
        host=env.get("HOST") or "0.0.0.0",
        port=port,
        worker_id=_worker_id(env),
        worker_endpoint=env.get("WORKER_ENDPOINT") or f"http://localhost:{port}",
        max_sessions=max_sessions,
        worker_auth_token=env.get("WORKER_AUTH_TOKEN") or None,
        storage_dir=storage_dir,
        database_path=_database_path(env, storage_dir),
        engine=engine,
        sim_hub=env.get("SIM_HUB") or None,
        sim_port=sim_port,
        sim_qr_ttl=_float(env, "SIM_QR_TTL", 20.0, minimum=0.1),
        sim_qr_max=_int(env, "SIM_QR_MAX", 6),
        qr_cycles=_int(env, "QR_CYCLES", 2, minimum=1),
        log_level=level,
        log_format=log_format,
        session_heartbeat_interval=_float(env, "SESSION_HEARTBEAT_INTERVAL", 2.0, minimum=0.05),
        session_heartbeat_liveness=_int(env, "SESSION_HEARTBEAT_LIVENESS", 3, minimum=2),
        create_qr_wait=_float(env, "CREATE_QR_WAIT", 3.0),
        start_stagger=_float(env, "START_STAGGER", 0.2),
        send_timeout=_float(env, "SEND_TIMEOUT", 10.0, minimum=0.1),
        send_attempt_timeout=_float(env, "SEND_ATTEMPT_TIMEOUT", 15.0, minimum=0.1),
        message_ttl=_float(env, "MESSAGE_TTL", 3600.0, minimum=1.0),
        pacing=PacingPolicy(
            gap=_float(env, "PACING_GAP", 0.0, maximum=3600.0),
            cold_gap=_float(env, "PACING_COLD_GAP", 3.0, maximum=3600.0),
            jitter=_float(env, "PACING_JITTER", 0.5, maximum=10.0),
            daily_cap=_int(env, "PACING_DAILY_CAP", 0),
            warmup_days=_float(env, "PACING_WARMUP_DAYS", 0.0, maximum=365.0),
        ),
        edit_window=_float(env, "EDIT_WINDOW", 900.0),
        sample_interval=_float(env, "SAMPLE_INTERVAL", 5.0, minimum=0.1),
        session_memory_limit_mb=_float(env, "SESSION_MEMORY_LIMIT_MB", 512.0),
        disk_free_warn_mb=_float(env, "DISK_FREE_WARN_MB", 256.0),
        spawner=spawner,
        event_loop=loop,
        shutdown_timeout=_float(env, "SHUTDOWN_TIMEOUT", 15.0, minimum=0.1),
        restart_policy=policy,
        jwt_secret=jwt_secret,
        jwt_audience=env.get("JWT_AUDIENCE") or None,
        jwt_issuer=env.get("JWT_ISSUER") or None,
        jwt_max_lifetime=_float(env, "JWT_MAX_LIFETIME", 86400.0),
        backend_url=env.get("BACKEND_URL") or None,
        max_upload_mb=_float(env, "MAX_UPLOAD_MB", 16.0, minimum=0.001),
        max_incoming_media_mb=_float(env, "MAX_INCOMING_MEDIA_MB", 64.0, minimum=0.001),
        message_retention_days=_retention_days(env),
        rate_limit_send_per_session=_int(env, "RATE_LIMIT_SEND_PER_SESSION", 1000),
        rate_limit_session_ops=session_ops,
        rate_limit_session_ops_burst=_int(
            env, "RATE_LIMIT_SESSION_OPS_BURST", max(2 * max_sessions, session_ops), minimum=1
        ),
        **_deployment(env),
        **_storage(env),
        event_retention=_float(env, "EVENT_RETENTION_HOURS", 72.0, minimum=0.01) * 3600.0,
        webhook_allow_private=_bool(env, "WEBHOOK_ALLOW_PRIVATE", False),
    )
