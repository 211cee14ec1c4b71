"""The simulated WhatsApp network's hub, run as one more supervised child.

Only with ``WA_ENGINE=sim`` and no ``SIM_HUB``: the worker then brings its own
network. The hub is started as a command (``python -m session_proc.sim``), never
imported: the supervisor does not import the session side.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from supervisor.supervision.child_env import child_env
from supervisor.supervision.policy import RestartPolicy
from supervisor.supervision.procs import ChildProcess
from supervisor.supervision.spawner import ProcessHandle

log = logging.getLogger("supervisor.supervision.hub_child")


class SimHubChild(ChildProcess):
    """The hub process slot; READY is the hub's one JSON line on stdout."""

    wants_stdout = True

    def __init__(
        self,
        *,
        zmq_endpoint: str,
        http_port: int,
        data_dir: Path,
        qr_ttl: float,
        policy: RestartPolicy,
        worker_id: str,
        log_format: str = "json",
        qr_max: int = 0,
    ) -> None:
        super().__init__("sim-hub", policy, log_extra={"workerId": worker_id})
        self.log_format = log_format
        self.qr_max = qr_max
        self.zmq_endpoint = zmq_endpoint
        self.http_port = http_port
        self.data_dir = data_dir
        self.qr_ttl = qr_ttl
        self.http_url: str | None = None
        self._ready = asyncio.Event()

    def argv(self, incarnation: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "session_proc.sim",
            "--zmq",
            self.zmq_endpoint,
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--data-dir",
            str(self.data_dir),
            "--parent-pid",
            str(os.getpid()),
            "--qr-ttl",
            str(self.qr_ttl),
            "--qr-max",
            str(self.qr_max),
        ]

    def env(self, incarnation: int) -> dict[str, str]:
        return child_env(WA_LOG_FORMAT=self.log_format)

    async def on_spawned(self, proc: ProcessHandle, incarnation: int) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("ready"):
                self.http_url = str(line.get("http"))
                log.info("sim hub ready: zmq %s, http %s", line.get("zmq"), self.http_url)
                self.ready(incarnation)
                self._ready.set()
        # stdout closed: the hub exited; the exit watcher reports it.

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the hub answered READY once; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
            return True
        except TimeoutError:
            return False
