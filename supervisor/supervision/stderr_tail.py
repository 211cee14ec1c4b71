"""The last lines a session process wrote to its stderr, where a Go panic lands.

Each session has a FIFO in the run dir (``run/stderr/<id>``) that every incarnation of its process
puts in place of its own stderr (``WA_STDERR_FIFO``, session_proc/main.py). The supervisor holds the
read end open for the session's lifetime, so what a dying process wrote is read after it died; every
complete line is passed on to the worker's own stderr (operators keep one stream) and the last
``MAX_LINES`` are kept, each cut at ``MAX_LINE``, for the dashboard. What reaches stderr is the
process's log (which never carries message text, media, tokens or keys) and the Go runtime's panics;
the session proxy's password is blanked should a line carry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("supervisor.supervision.stderr_tail")

ENV = "WA_STDERR_FIFO"
MAX_LINES = 40
MAX_LINE = 500  # characters of one kept line
MAX_PARTIAL = 16384  # bytes of an unfinished line held before it is passed on as it is
READ_CHUNK = 65536


class StderrTail:
    """The read end of one session's stderr FIFO and the lines last read from it."""

    def __init__(self, path: Path, *, secret: str | None = None, forward_fd: int = 2) -> None:
        self.path = path
        self.lines: deque[str] = deque(maxlen=MAX_LINES)
        self._secret = secret if secret and len(secret) >= 4 else None
        self._forward_fd = forward_fd
        self._fd: int | None = None
        self._partial = b""

    @staticmethod
    def proxy_password(proxy: str | None) -> str | None:
        """The password in a proxy URL (blanked in kept lines), if any."""
        if not proxy:
            return None
        try:
            return urlsplit(proxy).password
        except ValueError:
            return None

    def open(self) -> str:
        """Make the FIFO and start reading it (idempotent); the path a child writes to."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISFIFO(self.path.lstat().st_mode):
                    self.path.unlink()  # not ours (a file or a link): never write through it
            if not self.path.exists():
                os.mkfifo(self.path, 0o600)
            # Read and write: the FIFO never reports end of file between incarnations.
            self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            asyncio.get_running_loop().add_reader(self._fd, self._readable)
        return str(self.path)

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            chunk = os.read(self._fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("cannot read a session's stderr %s: %s", self.path.name, exc)
            self._stop_reading()
            return
        data = self._partial + chunk
        cut = data.rfind(b"\n") + 1
        complete, self._partial = data[:cut], data[cut:]
        if len(self._partial) > MAX_PARTIAL:  # a line that never ends: pass it on as it is
            complete, self._partial = data, b""
        if complete:
            self._keep(complete)

    def flush(self) -> None:
        """Pass on an unfinished last line (the process exited)."""
        if self._partial:
            data, self._partial = self._partial + b"\n", b""
            self._keep(data)

    def _keep(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self._forward_fd, data if data.endswith(b"\n") else data + b"\n")
        for raw in data.splitlines():
            line = raw.decode("utf-8", errors="replace")
            if self._secret:
                line = line.replace(self._secret, "***")
            if line.strip():
                self.lines.append(line[:MAX_LINE])

    def _stop_reading(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Stop reading and remove the FIFO (the session is gone or the worker stops)."""
        self.flush()
        self._stop_reading()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
