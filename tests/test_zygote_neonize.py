"""The zygote preloads neonize's protobuf modules but never its Go library; neonize children still work.

A forked Go runtime is broken, so the zygote (session_proc/zygote.py) may import
neonize's generated protobuf modules and event types only without running the
package's ``__init__`` (which loads the Go library); a neonize session process
forked from it loads the rest after the fork (session_proc/neonize/loader.py).
Checked in fresh interpreters and on real zygote and session processes: the test
runner itself holds a bare ``neonize`` entry (tests/test_neonize_engine.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from harness import unreachable_proxy, wait_for

from session_proc.neonize.loader import bundled_library_name
from supervisor.supervision.spawner import ProcessHandle, ZygoteSpawner
from transport import wire
from transport.channel import RouterChannel

ROOT = Path(__file__).resolve().parent.parent
GO_LIBRARY = bundled_library_name()


def run_python(code: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT, capture_output=True, text=True, timeout=90, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def maps_go_library(pid: int) -> bool:
    return GO_LIBRARY in Path(f"/proc/{pid}/maps").read_text()


def test_preload_imports_neonizes_protocols_without_its_go_library_or_a_thread() -> None:
    got = run_python("""
        import json, sys, threading
        from session_proc import zygote
        loaded = zygote.preload()
        print(json.dumps({
            "loaded": loaded,
            "mapped": open("/proc/self/maps").read().count("/neonize/neonize-"),  # the Go library's path
            "threads": threading.active_count(),
            "go_modules": [m for m in ("neonize.client", "neonize._binder", "neonize.utils.log") if m in sys.modules],
            "message": sys.modules["neonize.proto.Neonize_pb2"].Message.DESCRIPTOR.full_name,
        }))
    """)  # fmt: skip
    assert "neonize.proto.waE2E.WAWebProtobufsE2E_pb2" in got["loaded"] and "neonize.events" in got["loaded"]
    assert got["message"] == "neonize.Message"
    assert got["mapped"] == 0 and got["threads"] == 1 and got["go_modules"] == []


def test_preload_can_be_turned_off_and_forking_is_refused_after_a_thread_or_the_go_library() -> None:
    got = run_python("""
        import json, sys, threading
        from session_proc import zygote
        from session_proc.neonize import loader

        def refusal():
            try:
                zygote.check_fork_safe()
                return ""
            except RuntimeError as exc:
                return str(exc)

        zygote.preload(neonize=False)
        without = "neonize" in sys.modules
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait, name="stray")
        thread.start()
        thread_refused = refusal()
        stop.set()
        thread.join()
        loader.load()  # the Go library is loaded now: no fork may follow
        print(json.dumps({"without": without, "thread": thread_refused, "go": refusal()}))
    """)  # fmt: skip
    assert got["without"] is False
    assert "no threads before forking (running: MainThread, stray)" in got["thread"]
    assert "Go library must never be loaded before the fork" in got["go"]


def test_load_after_preload_completes_the_package_and_imports_no_protocol_left_out() -> None:
    # Catches a neonize upgrade that adds protobuf modules to what neonize.client imports.
    got = run_python("""
        import json, logging, sys
        from session_proc.neonize import loader
        logging.basicConfig(level=logging.WARNING, handlers=[logging.NullHandler()])
        loader.preload_protocols()
        before = set(sys.modules)
        client = loader.load()
        import neonize
        print(json.dumps({
            "new_protocols": sorted(m for m in set(sys.modules) - before if m.endswith("_pb2")),
            "complete": neonize.NewClient is client.NewClient and neonize.__version__ != "",
            "mapped": loader.go_library_mapped(),
            "root_level": logging.getLogger().level,
        }))
    """)  # fmt: skip
    assert got["new_protocols"] == []
    assert got["complete"] and got["mapped"]
    assert got["root_level"] == 30  # neonize's logging.basicConfig(INFO) was undone


class Rig:
    """A bound ROUTER, a running zygote, and the events heard per session process."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.events: asyncio.Queue[tuple[bytes, str, dict[str, Any]]] = asyncio.Queue()
        self.router = RouterChannel(f"ipc://{tmp}/sup.sock", on_event=self._on_event, heartbeat_interval=0.5)
        self.endpoint = self.router.bind()
        self.zygote = ZygoteSpawner(cwd=ROOT, env=env)

    async def _on_event(self, identity: bytes, op: str, body: dict[str, Any]) -> None:
        await self.events.put((identity, op, body))

    async def next(self, op: str, timeout: float = 30) -> tuple[bytes, dict[str, Any]]:
        while True:
            identity, got, body = await asyncio.wait_for(self.events.get(), timeout)
            if got == op:
                return identity, body

    def argv(self, engine: str) -> list[str]:
        """A session process's command line (session "nz" for neonize, "s" for sim), its identity tracked."""
        session_id = SESSION_OF[engine]
        self.router.track(f"{session_id}:1".encode())
        return [
            sys.executable, "-m", "session_proc", "--session-id", session_id, "--incarnation", "1",
            "--endpoint", self.endpoint, "--engine", engine, "--storage-dir", str(self.tmp),
            "--hb-interval", "0.5", "--hb-liveness", "4",
        ]  # fmt: skip

    def child_env(self, engine: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        # neonize: its dial fails offline, and it waits long before the next; sim: no hub to reach.
        options: dict[str, Any] = (
            {"retry_initial": 30.0, "proxy": unreachable_proxy()}
            if engine == "neonize"
            else {"hub": f"ipc://{self.tmp}/no-hub.sock"}
        )
        return {**os.environ, **(extra or {}), "WA_SESSION_OPTIONS": json.dumps(options)}

    async def spawn(self, engine: str, extra_env: dict[str, str] | None = None) -> ProcessHandle:
        """Fork a session process from the zygote."""
        return await self.zygote.spawn(self.argv(engine), self.child_env(engine, extra_env))


SESSION_OF = {"neonize": "nz", "sim": "s"}


@contextlib.asynccontextmanager
async def running_rig(tmp: Path, env: dict[str, str] | None = None) -> AsyncIterator[Rig]:
    """A Rig whose zygote runs (started with ``env``); everything closed after."""
    r = Rig(tmp, env)
    await r.zygote.start()
    try:
        yield r
    finally:
        await r.zygote.close()
        await r.router.close()


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running_rig(tmp_path) as r:
        yield r


async def test_neonize_child_forked_from_the_zygote_starts_and_reports_its_dial_error(rig: Rig) -> None:
    assert rig.zygote.pid is not None
    zygote_pid = rig.zygote.pid
    assert not maps_go_library(zygote_pid)  # preloaded, and still no Go runtime in the zygote
    handle = await rig.spawn("neonize")
    identity, ready = await rig.next("ready")
    assert identity == b"nz:1" and ready == {"pid": handle.pid, "engine": "neonize"}
    _, offline = await rig.next("disconnected")
    assert offline["willRetry"] and "dial" in offline["reason"], offline  # no WhatsApp here: the dial's error

    async def child_loaded_go() -> bool:
        return maps_go_library(handle.pid)

    await wait_for(child_loaded_go, what="the Go library in the child")  # loaded after the fork
    assert not maps_go_library(zygote_pid)
    await wire.ask_child(rig.router, b"nz:1", wire.Stop(), timeout=5)
    assert await asyncio.wait_for(handle.wait(), 20) == 0


# GODEBUG=inittrace=1 makes the Go runtime print a line per package it initialises: proof that the
# environment reached it. Go reads the environment block the process started with, not os.environ,
# so what the zygote started with and the child keeps must survive in it (engines.START_ENV's
# NEONIZE_BOT_TAG travels the same way), and no process title may be written over it.
GO_SEES_ENV = {"GODEBUG": "inittrace=1"}


async def test_the_go_library_in_a_zygote_child_sees_the_start_environment(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # The zygote's stderr, and so its children's, is this test's fd 2.
    async with running_rig(tmp_path, env={**os.environ, **GO_SEES_ENV}) as rig:
        handle = await rig.spawn("neonize", GO_SEES_ENV)
        await rig.next("disconnected")  # the Go library is loaded: it dialed (and failed, offline)
        assert "init runtime @" in capfd.readouterr().err
        await wire.ask_child(rig.router, b"nz:1", wire.Stop(), timeout=5)
        assert await asyncio.wait_for(handle.wait(), 20) == 0


async def test_the_go_library_in_an_execd_session_process_sees_its_start_environment(tmp_path: Path) -> None:
    rig = Rig(tmp_path)  # its zygote is never started: this child is exec'd
    child = await asyncio.create_subprocess_exec(
        *rig.argv("neonize"), env=rig.child_env("neonize", GO_SEES_ENV), cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    try:
        await rig.next("disconnected")
        await wire.ask_child(rig.router, b"nz:1", wire.Stop(), timeout=5)
        _, stderr = await asyncio.wait_for(child.communicate(), 20)
        assert child.returncode == 0 and b"init runtime @" in stderr
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await rig.router.close()


@pytest.mark.parametrize("preload", ["1", "0"])
async def test_sim_children_forked_with_or_without_neonizes_protocols_run(tmp_path: Path, preload: str) -> None:
    async with running_rig(tmp_path, env={**os.environ, "WA_ZYGOTE_PRELOAD_NEONIZE": preload}) as rig:
        handle = await rig.spawn("sim")
        identity, _ = await rig.next("ready")
        assert identity == b"s:1"
        assert rig.zygote.pid is not None
        assert not maps_go_library(rig.zygote.pid) and not maps_go_library(handle.pid)
        await wire.ask_child(rig.router, b"s:1", wire.Stop(), timeout=5)
        assert await asyncio.wait_for(handle.wait(), 20) == 0
