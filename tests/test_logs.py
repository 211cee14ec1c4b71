"""Logs: JSON lines with workerId/sessionId/level, rotated files under LOG_FILE_PATH,
readable text on a terminal, and never message text or secrets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from harness import TOKEN, clean_env, free_port, running_worker, wait_for

from supervisor import logs
from supervisor.config import load

SECRET_TEXT = "the-eagle-lands-at-midnight-7731"
INCOMING_TEXT = "reply-with-the-password-9921"
ENCRYPTION_KEY = "0123456789abcdef-encryption-key-do-not-log"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_files_split_errors_from_everything_and_rotate(tmp_path: Path, restore_logging: None) -> None:
    settings = load(
        {
            "LOG_FILE_PATH": str(tmp_path / "logs"),
            "LOG_FILE_MAX_BYTES": "2048",
            "LOG_FILE_BACKUPS": "2",
            "LOG_FORMAT": "json",
            "WORKER_ID": "w-files",
        }
    )
    logs.configure(settings)
    log = logging.getLogger("supervisor.test")
    log.info("session started", extra={"sessionId": "s1"})
    log.error("session process failed: exit code 1", extra={"sessionId": "s1"})
    for handler in logging.getLogger().handlers:
        handler.flush()
    combined = _lines(tmp_path / "logs" / logs.COMBINED_LOG)
    errors = _lines(tmp_path / "logs" / logs.ERROR_LOG)
    assert [(line["level"], line["msg"]) for line in combined] == [
        ("info", "session started"),
        ("error", "session process failed: exit code 1"),
    ]
    assert [line["msg"] for line in errors] == ["session process failed: exit code 1"]
    assert all(line["workerId"] == "w-files" and line["sessionId"] == "s1" for line in combined)
    # Past LOG_FILE_MAX_BYTES the file rotates; LOG_FILE_BACKUPS old files are kept.
    for n in range(100):
        log.info("filler line %d", n, extra={"sessionId": "s1"})
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert names == ["combined.log", "combined.log.1", "combined.log.2", "error.log"]
    assert (tmp_path / "logs" / "combined.log").stat().st_size <= 2048


def test_configured_secrets_are_blanked_should_one_slip_in(tmp_path: Path, restore_logging: None) -> None:
    settings = load({"LOG_FILE_PATH": str(tmp_path), "ENCRYPTION_KEY": ENCRYPTION_KEY, "WORKER_AUTH_TOKEN": TOKEN})
    logs.configure(settings, token=TOKEN)
    logging.getLogger("supervisor.test").warning("oops %s and %s", TOKEN, ENCRYPTION_KEY)
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = (tmp_path / logs.COMBINED_LOG).read_text()
    assert TOKEN not in text and ENCRYPTION_KEY not in text
    assert _lines(tmp_path / logs.COMBINED_LOG)[0]["msg"] == "oops [redacted] and [redacted]"


async def test_a_send_and_a_receive_leave_no_text_or_secret_in_any_log(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    async with running_worker(
        tmp_path / "w", LOG_FILE_PATH=str(log_dir), LOG_LEVEL="debug", ENCRYPTION_KEY=ENCRYPTION_KEY
    ) as w:
        await w.create_linked("quiet", "6281800001")
        status, body = await w.api("POST", "/session/quiet/send", json={"to": "6281800002", "text": SECRET_TEXT})
        assert status == 200, body
        await w.hub("POST", "/phones/6281800003/messages", json={"to": "6281800001", "text": INCOMING_TEXT})

        async def received() -> bool:
            _, page = await w.api("GET", "/session/quiet/messages?direction=in")
            return bool(page["data"]["messages"])

        await wait_for(received, what="incoming message stored")
    combined = log_dir / logs.COMBINED_LOG
    worker_stderr = w.log_path.read_text()  # the worker's and its session processes' stderr
    everything = {"combined.log": combined.read_text(), "stderr": worker_stderr}
    if (log_dir / logs.ERROR_LOG).exists():
        everything["error.log"] = (log_dir / logs.ERROR_LOG).read_text()
    for name, text in everything.items():
        for secret in (SECRET_TEXT, INCOMING_TEXT, TOKEN, ENCRYPTION_KEY):
            assert secret not in text, f"{secret!r} in {name}"
    # The lines are JSON with the worker's id, and session lines name their session.
    lines = _lines(combined)
    assert lines and all(line["workerId"] == "test-worker" for line in lines)
    assert any(line.get("sessionId") == "quiet" and line["msg"] == "connected" for line in lines)
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    child_lines = [json.loads(line) for line in worker_stderr.splitlines() if line.startswith("{")]
    assert any(line.get("sessionId") == "quiet" and line["logger"].startswith("session") for line in child_lines)


async def test_text_lines_on_a_terminal(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **clean_env(),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "STORAGE_DIR": str(tmp_path),
        "WA_ENGINE": "sim",
        "SIM_PORT": str(free_port()),
        "WORKER_AUTH_TOKEN": TOKEN,
        "WORKER_ID": "tty-worker",
    }
    env.pop("LOG_FORMAT", None)  # auto: text on a terminal
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "serve"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain_pty() -> None:
        with contextlib.suppress(OSError):  # EIO once the last writer closed the terminal
            while data := os.read(master, 65536):
                chunks.append(data)

    reader = asyncio.create_task(asyncio.to_thread(drain_pty))
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                        return resp.status == 200
                return False

            await wait_for(healthy, timeout=30, what="worker on a terminal")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        await asyncio.wait_for(reader, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    out = b"".join(chunks).decode(errors="replace").splitlines()
    ready = [line for line in out if "worker tty-worker ready" in line]
    assert ready, out
    assert " INFO " in ready[0] and "workerId=tty-worker" in ready[0] and not ready[0].lstrip().startswith("{")
