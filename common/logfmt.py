"""Log formatting both sides share: JSON lines in production, readable text on a terminal.

Context such as ``workerId`` and ``sessionId`` is attached once per process
(``set_context``) or per call (``extra={...}``). Callers never log message
text, media, tokens or keys; this module cannot know what is secret, so the
rule lives with them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

_CONTEXT: dict[str, Any] = {}
# LogRecord attributes that are not user context.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def set_context(**fields: Any) -> None:
    """Fields added to every log line of this process (e.g. workerId, sessionId)."""
    _CONTEXT.update({k: v for k, v in fields.items() if v is not None})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    return {**_CONTEXT, **extra}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable lines for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        base = (
            f"{time.strftime('%H:%M:%S', time.localtime(record.created))}.{int(record.msecs):03d} "
            f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        text = f"{base}  [{ctx}]" if ctx else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(level: str = "INFO", *, stream: TextIO | None = None, json_lines: bool | None = None) -> None:
    """Send this process's logs to ``stream`` (stderr), as JSON unless it is a terminal."""
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not stream.isatty()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter at INFO would bury ours.
    for noisy in ("aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
