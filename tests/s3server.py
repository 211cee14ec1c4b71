"""A real S3 server for the tests: moto's standalone server as its own process on a loopback port.

The worker and the tests talk to it through the real ``minio`` client over HTTP;
nothing is mocked in-process. ``s3`` is one server for the whole run (tests keep
apart by bucket names); a test that kills the server starts its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-0123456789"


# The ENCRYPTION_KEY of workers that use this server (a worker refuses MinIO without one).
BACKUP_KEY = "test-backup-key-0123456789abcdef-0123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """One moto S3 server process."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"moto server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError("moto server did not listen in time")

    def kill(self) -> None:
        """SIGKILL: an outage as abrupt as it gets (moto keeps objects in memory: they are gone too)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> Minio:
        return Minio(self.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False, region="us-east-1")

    # What the store holds, read straight from the server (not through the worker's code).
    def keys(self, bucket: str, prefix: str) -> list[str]:
        """The keys under ``prefix``, sorted."""
        return sorted(str(o.object_name) for o in self.client().list_objects(bucket, prefix, recursive=True))

    def read(self, bucket: str, key: str) -> bytes:
        """An object's bytes."""
        resp = self.client().get_object(bucket, key)
        try:
            return bytes(resp.read())
        finally:
            resp.close()
            resp.release_conn()

    def stored_json(self, bucket: str, key: str) -> dict[str, Any] | None:
        """An object as JSON, or None when it does not exist."""
        if key not in self.keys(bucket, key):
            return None
        return dict(json.loads(self.read(bucket, key)))

    def worker_env(self, *, prefix: str | None = None) -> dict[str, str]:
        """The environment a worker needs to use this server, with buckets of its own (``prefix``)."""
        prefix = prefix or f"t{secrets.token_hex(4)}"
        return {
            "MINIO_ENDPOINT": "127.0.0.1",
            "MINIO_PORT": str(self.port),
            "MINIO_ACCESS_KEY": ACCESS_KEY,
            "MINIO_SECRET_KEY": SECRET_KEY,
            "MINIO_USE_SSL": "false",
            "MINIO_SESSIONS_BUCKET": f"{prefix}-sessions",
            "MINIO_MEDIA_BUCKET": f"{prefix}-media",
            # One key for every worker of a test: backups in a shared store are sealed.
            "ENCRYPTION_KEY": BACKUP_KEY,
        }


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The shared S3 server of the test run."""
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class S3Outage:
    """A TCP proxy in front of an S3 server that a test cuts and restores: an outage that keeps the store's contents.

    (Stopping moto would lose them: it keeps objects in memory.) Runs on the test's event loop.
    """

    def __init__(self, server: S3Server) -> None:
        self.server = server
        self.port = _free_port()
        self._listener: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def worker_env(self, *, prefix: str) -> dict[str, str]:
        """The server's worker environment, through this proxy."""
        return {**self.server.worker_env(prefix=prefix), "MINIO_PORT": str(self.port)}

    async def restore(self) -> None:
        """Accept connections (again) and forward them to the S3 server."""
        self._listener = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()  # one side ended: so does the other
            self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
