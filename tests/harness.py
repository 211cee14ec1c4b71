"""Running the worker as a person would: a real ``wa-worker serve`` process on loopback ports.

Waiting is done on observable conditions (the worker's API, process state), with
timeouts only as upper bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import contract
import psutil
import pytest
from aiohttp import web

from transport import wire

TOKEN = "test-token-0123456789"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unreachable_proxy() -> str:
    """A SOCKS5 proxy on a loopback port nobody listens on: a neonize session's dial fails at once,
    the same on a machine with a route to WhatsApp as on one without."""
    return f"socks5://127.0.0.1:{free_port()}"


async def wait_for(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return cast("T", last)
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}; last: {last!r}")
        await asyncio.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


# What a worker started by a test inherits from the machine: nothing that configures it. A MINIO_*,
# BACKEND_URL, JWT_SECRET or ENCRYPTION_KEY set on a developer's machine would change what a test tests.
# WA_WIRE_STRICT is the suite's own switch (tests/conftest.py): workers run the wire contract strictly too.
INHERITED_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "WA_WIRE_STRICT")


def clean_env(**settings: str) -> dict[str, str]:
    """The environment of a process a test starts: the machine's basics and ``settings``, nothing else."""
    return {name: os.environ[name] for name in INHERITED_ENV if name in os.environ} | settings


class Worker:
    """A running worker process and an HTTP client for it."""

    def __init__(self, storage: Path, env_overrides: dict[str, str] | None = None) -> None:
        self.storage = storage
        self.port = free_port()
        self.sim_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **clean_env(),
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "STORAGE_DIR": str(storage),
            "WA_ENGINE": "sim",
            "SIM_PORT": str(self.sim_port),
            "WORKER_AUTH_TOKEN": TOKEN,
            "WORKER_ID": "test-worker",
            "SESSION_HEARTBEAT_INTERVAL": "0.5",
            "SESSION_HEARTBEAT_LIVENESS": "4",
            "SAMPLE_INTERVAL": "0.5",
            "START_STAGGER": "0.05",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            # Sends to new chats go out at once unless a test is about pacing (tests/test_pacing_worker.py).
            "PACING_COLD_GAP": "0",
            **(env_overrides or {}),
        }
        self.hub_url = f"http://127.0.0.1:{self.env['SIM_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.log_path = storage / "worker.log"
        # What runs the worker; a test may wrap it (e.g. in a mount namespace with a small disk).
        self.command = [sys.executable, "-m", "supervisor.cli", "serve"]

    async def start(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.http = aiohttp.ClientSession(headers={"X-Worker-Token": TOKEN})

        async def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get(f"{self.url}/health") as resp:  # type: ignore[union-attr]
                    return resp.status == 200
            return False

        await wait_for(healthy, timeout=30, what="worker /health")
        contract.watch(self.url)  # every answer from here on is checked against the served document
        await contract.check_served_document(self._get_json, self.url)

    async def _get_json(self, url: str) -> Any:
        assert self.http is not None
        async with self.http.get(url) as resp:
            return await resp.json()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    async def api(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.request(method, f"{self.url}{path}", **kwargs) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = await resp.text()
            return resp.status, body

    async def hub(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.request(method, f"{self.hub_url}{path}", **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def session(self, session_id: str) -> dict[str, Any]:
        status, body = await self.api("GET", "/sessions")
        assert status == 200, body
        for item in body["data"]["sessions"]:
            if item["sessionId"] == session_id:
                return dict(item)
        raise KeyError(session_id)

    async def wait_session(
        self, session_id: str, pred: Callable[[dict[str, Any]], bool], *, timeout: float = 20, what: str = ""
    ) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            try:
                item = await self.session(session_id)
            except KeyError:
                return None
            return item if pred(item) else None

        return await wait_for(check, timeout=timeout, what=what or f"session {session_id}")

    async def create_linked(self, session_id: str, phone: str) -> dict[str, Any]:
        """Create a session, scan its QR with ``phone`` and wait until it is connected."""
        status, body = await self.api("POST", "/session/create", json={"sessionId": session_id})
        assert status == 200, body

        async def qr() -> str | None:
            _, b = await self.api("GET", f"/session/{session_id}/qr")
            return b["data"]["qr"] if b.get("success") else None

        code = await wait_for(qr, what=f"QR of {session_id}")
        status, body = await self.hub("POST", f"/phones/{phone}/scan", json={"qr": code})
        assert status == 200, body
        return await self.wait_session(session_id, lambda s: s["status"] == "connected", what="connected")

    def child_pids(self) -> list[int]:
        """Every live process under the worker (sessions and the hub)."""
        assert self.proc is not None
        try:
            return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def child_cmdlines(self) -> dict[int, str]:
        """Every live process under the worker, with its command line (one that exits meanwhile is left out)."""
        found = {}
        for pid in self.child_pids():
            try:
                found[pid] = " ".join(psutil.Process(pid).cmdline())
            except psutil.NoSuchProcess:
                continue  # exited between the listing and the reading: not live
        return found

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Stop the worker with ``sig`` and wait for it to exit; returns its exit code."""
        if self.http is not None:
            await self.http.close()
            self.http = None
        contract.unwatch(self.url)
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


async def history_message(w: Worker, sid: str, message_id: str) -> dict[str, Any] | None:
    """One message of a session's history (among its latest 50), or None while it is not there."""
    status, body = await w.api("GET", f"/session/{sid}/messages?limit=50")
    assert status == 200, body
    return next((m for m in body["data"]["messages"] if m["id"] == message_id), None)


async def kill_tree(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


@contextlib.asynccontextmanager
async def running_worker(storage: Path, **env: str) -> AsyncIterator[Worker]:
    """A started worker that is stopped, with every process it left, when the block ends."""
    worker = Worker(storage, env)
    await worker.start()
    try:
        yield worker
    finally:
        children = worker.child_pids()
        await worker.stop()
        leftovers = [p for p in children if pid_alive(p)]
        await kill_tree(leftovers)
        if leftovers:
            print(f"worker left processes behind: {leftovers}")
    check_wire_contract(worker)


def check_wire_contract(worker: Worker) -> None:
    """Fail when the worker or a session process met a frame that broke the wire contract (strict mode)."""
    if worker.env.get(wire.STRICT_ENV) != "1":
        return  # a test that sends bad frames on purpose turns strict mode off for its worker
    text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
    broken = [line for line in text.splitlines() if "wire protocol error" in line]
    if broken:
        pytest.fail("the wire contract was broken:\n" + "\n".join(broken[:10]))


@contextlib.asynccontextmanager
async def standalone_hub(directory: Path) -> AsyncIterator[dict[str, str]]:
    """A ``wa-worker sim`` hub of its own, as several workers share one; yields the env a worker needs."""
    zmq_port, http_port = free_port(), free_port()
    env = {
        **clean_env(),
        "SIM_HUB": f"tcp://127.0.0.1:{zmq_port}",
        "SIM_PORT": str(http_port),
        "STORAGE_DIR": str(directory / "hub"),
    }
    hub = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "sim"], env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert hub.stdout is not None
        ready = json.loads(await asyncio.to_thread(hub.stdout.readline))
        assert ready["ready"] is True and ready["zmq"] == env["SIM_HUB"]
        yield {"SIM_HUB": env["SIM_HUB"], "SIM_PORT": env["SIM_PORT"]}
    finally:
        hub.terminate()
        await asyncio.to_thread(hub.wait, 10)


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[tuple[int, list[str]]]:
    """A webhook receiver on loopback; yields its port and what it heard: ``POST /hook`` records the
    event's name, ``POST /redirect`` answers 302 to ``/stolen``, which records ``redirected <method>``."""
    got: list[str] = []
    app = web.Application()

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.json())["event"])
        return web.Response(status=204)

    async def stolen(request: web.Request) -> web.Response:
        got.append(f"redirected {request.method}")
        return web.Response(status=204)

    async def redirect(request: web.Request) -> web.Response:
        await request.read()
        raise web.HTTPFound("/stolen")

    app.router.add_post("/hook", hook)
    app.router.add_post("/redirect", redirect)
    app.router.add_route("*", "/stolen", stolen)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, got
    finally:
        await runner.cleanup()
