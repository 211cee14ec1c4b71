"""The pre-warmed spawner (supervisor/supervision/spawner.py + session_proc/zygote.py) with real processes.

Session processes are forked by a real zygote and talk to a real ROUTER; the
tests assert what the supervisor relies on: every exit reported with its code
or signal, signals reach the right process, and nothing outlives the zygote or
the supervisor.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from harness import pid_alive, wait_for

from supervisor.supervision.spawner import ExecHandle, ForkedHandle, ZygoteSpawner, exec_spawn
from transport import wire
from transport.channel import RouterChannel
from transport.identity import routing_identity

ROOT = Path(__file__).resolve().parent.parent


class Rig:
    """A bound ROUTER, a running zygote, and the ready events heard."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ready: set[bytes] = set()
        self.router = RouterChannel(f"ipc://{tmp}/sup.sock", on_event=self._on_event, heartbeat_interval=0.5)
        self.endpoint = self.router.bind()
        self.zygote = ZygoteSpawner(cwd=ROOT)
        self.env = {**os.environ, "WA_SESSION_OPTIONS": json.dumps({"hub": f"ipc://{tmp}/no-hub.sock"})}

    async def _on_event(self, identity: bytes, op: str, _body: dict[str, Any]) -> None:
        if op == "ready":
            self.ready.add(identity)

    def argv(self, incarnation: int, *, engine: str = "sim") -> list[str]:
        return [
            sys.executable, "-m", "session_proc", "--session-id", "t", "--incarnation", str(incarnation),
            "--endpoint", self.endpoint, "--engine", engine, "--storage-dir", str(self.tmp),
            "--hb-interval", "0.5", "--hb-liveness", "4",
        ]  # fmt: skip

    async def spawn_ready(self, incarnation: int) -> ForkedHandle:
        identity = routing_identity("t", incarnation)
        self.router.track(identity)
        handle = await self.zygote.spawn(self.argv(incarnation), self.env)

        async def ready() -> bool:
            return identity in self.ready

        await wait_for(ready, what=f"ready from incarnation {incarnation}")
        return handle


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    await r.zygote.start()
    try:
        yield r
    finally:
        await r.zygote.close()
        await r.router.close()


async def test_forked_child_runs_a_session_and_reports_its_clean_exit(rig: Rig) -> None:
    handle = await rig.spawn_ready(1)
    assert handle.pid != rig.zygote.pid and pid_alive(handle.pid)
    assert handle.returncode is None
    await wire.ask_child(rig.router, b"t:1", wire.Stop(), timeout=5)
    assert await asyncio.wait_for(handle.wait(), 20) == 0
    assert not pid_alive(handle.pid)


async def test_crash_exit_code_is_reported(rig: Rig) -> None:
    handle = await rig.zygote.spawn(rig.argv(1, engine="no-such-engine"), rig.env)
    assert await asyncio.wait_for(handle.wait(), 20) == 1


async def test_signal_sent_through_the_handle_is_reported(rig: Rig) -> None:
    handle = await rig.spawn_ready(1)
    handle.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(handle.wait(), 20) == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        handle.send_signal(signal.SIGTERM)  # an exited child is never signalled again


async def test_sigkill_from_outside_is_seen(rig: Rig) -> None:
    first = await rig.spawn_ready(1)
    second = await rig.spawn_ready(2)
    os.kill(first.pid, signal.SIGKILL)
    assert await asyncio.wait_for(first.wait(), 20) == -signal.SIGKILL
    assert second.returncode is None and pid_alive(second.pid)  # only the one killed


async def test_zygote_killed_takes_its_children_and_is_replaced(rig: Rig) -> None:
    children = [await rig.spawn_ready(1), await rig.spawn_ready(2)]
    old = rig.zygote.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    for handle in children:
        assert await asyncio.wait_for(handle.wait(), 20) == -signal.SIGKILL

    async def gone() -> bool:
        return not any(pid_alive(h.pid) for h in children)

    await wait_for(gone, what="children of the killed zygote gone")

    async def replaced() -> bool:
        return rig.zygote.pid not in (None, old)

    await wait_for(replaced, what="a new zygote")
    again = await rig.spawn_ready(3)
    assert pid_alive(again.pid)


async def test_exec_handle_reports_signals_like_asyncio() -> None:
    handle: ExecHandle = await exec_spawn(
        [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), stdout=False
    )
    handle.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(handle.wait(), 20) == -signal.SIGTERM


SUPERVISOR_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from supervisor.supervision.spawner import ZygoteSpawner

    async def main():
        z = ZygoteSpawner()
        await z.start()
        tmp = sys.argv[1]
        argv = [sys.executable, "-m", "session_proc", "--session-id", "t", "--incarnation", "1",
                "--endpoint", f"ipc://{tmp}/nobody.sock", "--engine", "sim", "--storage-dir", tmp,
                # Silence from the supervisor would end the child only after 10 minutes: a quick
                # exit can only come from the parent-death signals.
                "--hb-interval", "200", "--hb-liveness", "3"]
        env = {**os.environ, "WA_SESSION_OPTIONS": json.dumps({"hub": f"ipc://{tmp}/no-hub.sock"})}
        h = await z.spawn(argv, env)
        print(json.dumps({"zygote": z.pid, "child": h.pid}), flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
    """
)


async def test_supervisor_killed_zygote_and_children_exit_by_themselves(tmp_path: Path) -> None:
    sup = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR_SCRIPT, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert sup.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(sup.stdout.readline), 30)
        pids = json.loads(line)
        assert pid_alive(pids["zygote"]) and pid_alive(pids["child"])
        sup.kill()
        sup.wait()

        async def all_gone() -> bool:
            return not pid_alive(pids["zygote"]) and not pid_alive(pids["child"])

        await wait_for(all_gone, timeout=20, what="zygote and child gone after the supervisor died")
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
