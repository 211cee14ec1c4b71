"""Where the worker's log goes: stderr always (JSON lines, readable text on a terminal)
and, when ``LOG_FILE_PATH`` is set, two rotated files as the seed kept them:
``error.log`` (errors only) and ``combined.log`` (everything), both JSON lines.

Session processes inherit the worker's stderr, so their lines reach stderr (and
supervisord's or the container runtime's log) but not these files. Callers never
log message text, media, tokens or keys; a filter here additionally blanks the
configured secrets should one slip into a line.
"""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Iterable
from pathlib import Path

from common import logfmt
from supervisor.config import Settings

ERROR_LOG = "error.log"
COMBINED_LOG = "combined.log"
REDACTED = "[redacted]"
# Libraries whose DEBUG lines carry data: aiosqlite logs every statement with its parameters
# (message text), urllib3 every URL (presigned query strings). They stay at INFO or above
# whatever LOG_LEVEL says.
DATA_LOGGERS = ("aiosqlite", "urllib3", "minio", "botocore")


class SecretFilter(logging.Filter):
    """Blank known secret values in a record's message and arguments (a safety net, not the rule)."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        # Short values would blank ordinary words; real secrets are long.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        cleaned = message
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, REDACTED)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def secrets_of(settings: Settings, token: str | None = None) -> list[str | None]:
    """The configured values that must never appear in a log line."""
    return [
        token,
        settings.worker_auth_token,
        settings.jwt_secret,
        settings.encryption_key,
        settings.minio_secret_key,
        settings.minio_access_key,
    ]


def file_handlers(directory: Path, *, max_bytes: int, backups: int) -> list[logging.Handler]:
    """Rotated JSON-lines handlers: ``error.log`` (ERROR and above) and ``combined.log`` (all)."""
    directory.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = []
    for name, level in ((ERROR_LOG, logging.ERROR), (COMBINED_LOG, logging.NOTSET)):
        # delay: the file is opened on the first line, not at import or in a worker that never logs.
        handler = logging.handlers.RotatingFileHandler(
            directory / name, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )
        handler.setLevel(level)
        handler.setFormatter(logfmt.JsonFormatter())
        handlers.append(handler)
    return handlers


def configure(settings: Settings, *, token: str | None = None) -> None:
    """Set up the worker's logging from its settings: stderr, plus rotated files under LOG_FILE_PATH."""
    json_lines = {"json": True, "text": False}.get(settings.log_format)
    logfmt.set_context(workerId=settings.worker_id)
    logfmt.configure(settings.log_level, json_lines=json_lines)
    root = logging.getLogger()
    for name in DATA_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    if settings.log_file_path is not None:
        for handler in file_handlers(
            settings.log_file_path, max_bytes=settings.log_file_max_bytes, backups=settings.log_file_backups
        ):
            root.addHandler(handler)
    add_secret_filter(secrets_of(settings, token))


def add_secret_filter(secrets: Iterable[str | None]) -> None:
    """Install the secret filter on every root handler (handler filters see records from all loggers)."""
    secret_filter = SecretFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(secret_filter)
