"""The child process of one WhatsApp session: how it is started and how it is heard.

Its routing identity on the supervisor's ROUTER is transport.identity's ``<sessionId>:<incarnation>``;
frames from an older incarnation are recognised by that and dropped.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from session_proc.engines import START_ENV
from supervisor.supervision.child_env import child_env
from supervisor.supervision.policy import RestartPolicy
from supervisor.supervision.procs import ChildProcess, TransitionListener
from supervisor.supervision.spawner import ProcessHandle, Spawner
from supervisor.supervision.states import ProcState
from supervisor.supervision.stderr_tail import ENV as STDERR_ENV
from supervisor.supervision.stderr_tail import StderrTail
from transport import wire
from transport.channel import ChannelError, RouterChannel
from transport.identity import routing_identity


@dataclass(frozen=True, slots=True)
class ChildConfig:
    """What every session child of this worker is started with."""

    endpoint: str  # the supervisor's ROUTER
    engine: str
    storage_dir: Path
    heartbeat_interval: float
    heartbeat_liveness: int
    log_level: str
    log_format: str  # json | text
    engine_options: dict[str, Any]  # e.g. {"hub": "ipc://..."} for the sim engine
    spawner: Spawner | None = None  # None: exec each session process; else forked (SPAWNER=zygote)


class SessionChild(ChildProcess):
    """A session's child process slot."""

    def __init__(
        self,
        session_id: str,
        config: ChildConfig,
        router: RouterChannel,
        policy: RestartPolicy,
        *,
        proxy: str | None,
        worker_id: str,
        on_transition: TransitionListener | None = None,
    ) -> None:
        super().__init__(
            session_id,
            policy,
            log_extra={"sessionId": session_id, "workerId": worker_id},
            on_transition=on_transition,
        )
        self.session_id = session_id
        self.config = config
        self.router = router
        self.proxy = proxy
        self.ready_incarnation = 0
        self.spawner = config.spawner
        # Its stderr's last lines (the dashboard); the FIFO lives in the private run dir.
        self.stderr = StderrTail(
            config.storage_dir / "run" / "stderr" / session_id, secret=StderrTail.proxy_password(proxy)
        )

    @property
    def identity(self) -> bytes:
        return routing_identity(self.session_id, self.incarnation)

    def argv(self, incarnation: int) -> list[str]:
        c = self.config
        return [
            sys.executable,
            "-m",
            "session_proc",
            "--session-id",
            self.session_id,
            "--incarnation",
            str(incarnation),
            "--endpoint",
            c.endpoint,
            "--engine",
            c.engine,
            "--storage-dir",
            str(c.storage_dir),
            "--hb-interval",
            str(c.heartbeat_interval),
            "--hb-liveness",
            str(c.heartbeat_liveness),
            "--log-level",
            c.log_level,
        ]

    def env(self, incarnation: int) -> dict[str, str]:
        env = child_env(**START_ENV)
        # By environment, not argv: a proxy URL may carry a password and ps shows argv to everyone.
        env["WA_SESSION_OPTIONS"] = json.dumps({**self.config.engine_options, "proxy": self.proxy})
        env["WA_LOG_FORMAT"] = self.config.log_format
        env[STDERR_ENV] = self.stderr.open()
        return env

    async def on_spawned(self, proc: ProcessHandle, incarnation: int) -> None:
        self.router.track(routing_identity(self.session_id, incarnation))

    def on_exited(self, incarnation: int) -> None:
        identity = routing_identity(self.session_id, incarnation)
        self.router.forget(identity)
        # Whoever waits on this child (a send) learns now, not at its timeout.
        self.router.fail_pending(identity, "the session process exited")
        self.stderr.flush()

    async def close(self) -> None:
        await super().close()
        self.stderr.close()

    def mark_ready(self, incarnation: int) -> None:
        """The child of ``incarnation`` announced itself."""
        self.ready_incarnation = incarnation
        self.ready(incarnation)

    def check_heartbeat(self) -> None:
        """Report a hang when a ready child has been silent past its liveness."""
        if self.state not in (ProcState.STARTING, ProcState.RUNNING) or self.ready_incarnation != self.incarnation:
            return
        silence = self.router.silence(self.identity)
        limit = self.config.heartbeat_interval * self.config.heartbeat_liveness
        if silence is not None and silence > limit:
            self.hung(self.incarnation, silence)

    def request_stop(self) -> None:
        self._spawn_task(self._ask_stop(self.identity))

    async def _ask_stop(self, identity: bytes) -> None:
        try:
            await wire.ask_child(self.router, identity, wire.Stop(), timeout=self.policy.stop_timeout)
        except (ChannelError, wire.WireError):
            pass  # the policy's stop deadline escalates to SIGTERM and SIGKILL
