"""The session process on its own: a real child against a ROUTER the test binds."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from transport import wire
from transport.channel import RemoteError, RouterChannel


async def _spawn_child(tmp_path: Path, endpoint: str, *extra: str) -> asyncio.subprocess.Process:
    # The hub endpoint leads nowhere: the sim engine keeps trying and the process stays up.
    options = json.dumps({"hub": f"ipc://{tmp_path}/no-hub.sock"})
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "session_proc",
        "--session-id",
        "solo",
        "--incarnation",
        "1",
        "--endpoint",
        endpoint,
        "--storage-dir",
        str(tmp_path),
        "--hb-interval",
        "0.2",
        "--hb-liveness",
        "3",
        *extra,
        env={**os.environ, "WA_SESSION_OPTIONS": options, wire.STRICT_ENV: "0"},
    )


async def test_child_announces_itself_and_exits_when_the_supervisor_goes_silent(tmp_path: Path) -> None:
    events: asyncio.Queue[tuple[bytes, str, dict[str, Any]]] = asyncio.Queue()

    async def on_event(identity: bytes, op: str, body: dict[str, Any]) -> None:
        await events.put((identity, op, body))

    router = RouterChannel(f"ipc://{tmp_path}/sup.sock", on_event=on_event, heartbeat_interval=0.2)
    endpoint = router.bind()
    router.track(b"solo:1")
    child = await _spawn_child(tmp_path, endpoint, "--engine", "sim")
    try:
        identity, op, body = await asyncio.wait_for(events.get(), 15)
        assert (identity, op) == (b"solo:1", wire.ChildEvent.READY)
        assert wire.decode_event(op, body) == wire.Ready(pid=child.pid, engine="sim")
        assert psutil.Process(child.pid).cmdline()[0].startswith("wa-session solo")
        # It answers requests; one outside the wire contract is refused as a protocol error (strict mode off).
        with pytest.raises(RemoteError) as refused:
            await router.request(b"solo:1", "status", timeout=5)
        assert refused.value.code == "PROTOCOL_ERROR" and "unknown request 'status'" in refused.value.message
        with pytest.raises(RemoteError) as refused:
            await router.request(b"solo:1", wire.ToChild.PAIR_CODE, {"phone": "628111", "pin": "0"}, timeout=5)
        assert refused.value.code == "PROTOCOL_ERROR" and "unknown field `pin`" in refused.value.message
        # The supervisor stops beating (as if hung): the child leaves by itself, code 3.
        await router.close()
        assert await asyncio.wait_for(child.wait(), 10) == 3
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await router.close()


async def test_child_reports_why_it_cannot_start(tmp_path: Path) -> None:
    fatal: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def on_request(identity: bytes, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if op == wire.ToSupervisor.FATAL and not fatal.done():
            fatal.set_result(body)
        return {}

    router = RouterChannel(f"ipc://{tmp_path}/sup.sock", on_request=on_request, heartbeat_interval=0.2)
    endpoint = router.bind()
    child = await _spawn_child(tmp_path, endpoint, "--engine", "no-such-engine")
    try:
        body = await asyncio.wait_for(fatal, 15)
        assert body["code"] == "UNKNOWN_ENGINE"
        assert await asyncio.wait_for(child.wait(), 10) == 1
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await router.close()
