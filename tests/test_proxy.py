"""A session's proxy is stored with it and used on every start: after a worker is killed and started
again, its session process dials through the same proxy (the simulated network records the proxy each
connection declared, as whatsmeow is handed it), never from the worker's own address."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from harness import Worker, kill_tree, running_worker, wait_for

from supervisor.sessions.proxy import ProxySeal, ProxyUnreadable, masked

PROXY = "socks5://alice:pw-7f3a9c@10.0.0.7:1080"
SHOWN = "socks5://alice:***@10.0.0.7:1080"
KEY = "k" * 40


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (PROXY, SHOWN),
        ("http://user:@proxy.example:3128/", "http://user:***@proxy.example:3128/"),
        ("https://only-user@proxy.example:443", "https://only-user@proxy.example:443"),
        ("socks5://[::1]:1080", "socks5://[::1]:1080"),
        ("http://u:p:with:colons@h:8080", "http://u:***@h:8080"),
        (None, None),
    ],
)
def test_the_password_is_masked(url: str | None, shown: str | None) -> None:
    assert masked(url) == shown


def test_a_sealed_proxy_opens_only_for_its_session_and_key() -> None:
    seal = ProxySeal(KEY)
    stored = seal.seal(PROXY, "s1")
    assert b"pw-7f3a9c" not in stored and b"10.0.0.7" not in stored
    assert ProxySeal(KEY).open(stored, "s1") == PROXY  # another run, same key
    with pytest.raises(ProxyUnreadable, match="ENCRYPTION_KEY"):
        ProxySeal(KEY).open(stored, "s2")  # moved to another session
    with pytest.raises(ProxyUnreadable, match="ENCRYPTION_KEY"):
        ProxySeal("x" * 40).open(stored, "s1")
    with pytest.raises(ProxyUnreadable, match="set ENCRYPTION_KEY"):
        ProxySeal(None).open(stored, "s1")
    plain = ProxySeal(None).seal(PROXY, "s1")
    assert ProxySeal(None).open(plain, "s1") == PROXY
    assert ProxySeal(KEY).open(plain, "s1") == PROXY  # stored before the key was set


async def _connections(w: Worker, session_id: str) -> list[Any]:
    """The proxies the simulated network saw the session's current connections declare."""
    _, devices = await w.hub("GET", "/devices")
    linked = [d["proxy"] for d in devices["devices"] if d["sessionId"] == session_id and d["connected"]]
    waiting = [c["proxy"] for c in devices["waiting"] if c["sessionId"] == session_id]
    return linked + waiting


async def _shown(w: Worker, session_id: str) -> tuple[Any, Any]:
    _, status = await w.api("GET", f"/session/{session_id}/status")
    return status["data"]["proxy"], (await w.session(session_id))["proxy"]


async def test_the_proxy_survives_a_killed_worker(tmp_path: Path) -> None:
    storage = tmp_path / "w"
    first = Worker(storage, {"ENCRYPTION_KEY": KEY})
    await first.start()
    try:
        status, body = await first.api("POST", "/session/create", json={"sessionId": "hidden", "proxy": PROXY})
        assert status == 200, body
        _, qr = await first.api("GET", "/session/hidden/qr")
        status, body = await first.hub("POST", "/phones/6281550001/scan", json={"qr": qr["data"]["qr"]})
        assert status == 200, body
        await first.wait_session("hidden", lambda s: s["status"] == "connected", what="connected")
        assert await _connections(first, "hidden") == [PROXY]
    finally:
        children = first.child_pids()
        await first.stop(signal.SIGKILL)
        await kill_tree(children)

    async with running_worker(storage, ENCRYPTION_KEY=KEY) as second:
        again = await second.wait_session("hidden", lambda s: s["status"] == "connected", what="reconnected")
        assert again["qrCount"] == 0
        assert await _connections(second, "hidden") == [PROXY]  # dialled through the proxy, not directly
        assert await _shown(second, "hidden") == (SHOWN, SHOWN)
        assert "pw-7f3a9c" not in first.log() + second.log()  # the password never reaches a log line
    with sqlite3.connect(storage / "worker.db") as db:
        [(stored,)] = db.execute("SELECT proxy FROM sessions WHERE id = 'hidden'").fetchall()
    assert stored and b"pw-7f3a9c" not in stored  # sealed with ENCRYPTION_KEY


async def test_a_create_with_another_proxy_is_refused(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", CREATE_QR_WAIT="0") as w:
        status, body = await w.api("POST", "/session/create", json={"sessionId": "p1", "proxy": PROXY})
        assert status == 200, body
        other = "http://bob:other@10.0.0.8:3128"
        status, body = await w.api("POST", "/session/create", json={"sessionId": "p1", "proxy": other})
        assert status == 409 and body["code"] == "PROXY_MISMATCH", body
        assert "pw-7f3a9c" not in body["error"] and "other" not in body["error"] and SHOWN in body["error"]
        for same in ({"proxy": PROXY}, {}):  # the same proxy, or none: idempotent as before
            status, body = await w.api("POST", "/session/create", json={"sessionId": "p1", **same})
            assert status == 200 and body["data"]["sessionId"] == "p1", body
        assert await wait_for(lambda: _connections(w, "p1"), what="p1 connected") == [PROXY]

        status, body = await w.api("POST", "/session/create", json={"sessionId": "direct"})
        assert status == 200, body
        assert await _shown(w, "direct") == (None, None)
        status, body = await w.api("POST", "/session/create", json={"sessionId": "direct", "proxy": PROXY})
        assert status == 409 and body["code"] == "PROXY_MISMATCH", body

        for bad in (
            "socks5h://h:1080",
            "socks4://h:1080",
            "socks5://h",
            "socks5://h:70000",
            "socks5://h:1/x",
            "h:1",
            "socks5://[1::2::3]:1080",
        ):
            status, body = await w.api("POST", "/session/create", json={"sessionId": "bad", "proxy": bad})
            assert status == 400 and body["code"] == "INVALID_PROXY", (bad, body)
        status, body = await w.api("GET", "/session/bad/status")
        assert status == 404  # nothing was created


async def test_a_proxy_that_cannot_be_read_keeps_the_session_down(tmp_path: Path) -> None:
    storage = tmp_path / "w"
    async with running_worker(storage, ENCRYPTION_KEY=KEY, CREATE_QR_WAIT="0") as w:
        status, body = await w.api("POST", "/session/create", json={"sessionId": "sealed", "proxy": PROXY})
        assert status == 200, body
        assert await wait_for(lambda: _connections(w, "sealed"), what="connected") == [PROXY]

    async with running_worker(storage, ENCRYPTION_KEY="another-key-" + "z" * 30, CREATE_QR_WAIT="0") as w2:
        item = await w2.session("sealed")  # known from the first answer, and down
        assert item["status"] == "disconnected" and item["proxy"] is None, item
        assert "ENCRYPTION_KEY" in item["lastError"] and item["pid"] is None, item
        assert "session stays down: the stored proxy failed authentication" in w2.log()
        status, body = await w2.api("POST", "/session/sealed/restart")
        assert status == 409 and body["code"] == "PROXY_UNREADABLE", body
        status, body = await w2.api("POST", "/session/create", json={"sessionId": "sealed"})
        assert status == 409 and body["code"] == "PROXY_UNREADABLE", body
        assert await _connections(w2, "sealed") == []  # never connected without its proxy
        assert not [c for c in w2.child_cmdlines().values() if "sealed" in c]

        # The proxy given again is stored under today's key, and the session starts through it.
        status, body = await w2.api("POST", "/session/create", json={"sessionId": "sealed", "proxy": PROXY})
        assert status == 200, body
        assert await wait_for(lambda: _connections(w2, "sealed"), what="connected") == [PROXY]
        assert (await w2.session("sealed"))["proxy"] == SHOWN


async def test_a_neonize_session_dials_its_proxy_again_after_a_restart(tmp_path: Path) -> None:
    # The real engine: whatsmeow is handed the restored proxy and dials it (a local listener that refuses
    # the SOCKS handshake), never WhatsApp directly from the worker's address.
    dialled = asyncio.Event()

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialled.set()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = f"socks5://user:pw-7f3a9c@127.0.0.1:{port}"
    storage = tmp_path / "w"
    try:
        async with running_worker(storage, WA_ENGINE="neonize") as w:
            status, body = await w.api("POST", "/session/create", json={"sessionId": "real", "proxy": proxy})
            assert status == 200, body
            await asyncio.wait_for(dialled.wait(), 30)
        dialled.clear()
        async with running_worker(storage, WA_ENGINE="neonize") as again:
            await asyncio.wait_for(dialled.wait(), 30)
            item = await again.session("real")
            assert item["proxy"] == f"socks5://user:***@127.0.0.1:{port}"
            assert "pw-7f3a9c" not in again.log()
    finally:
        server.close()
        await server.wait_closed()
