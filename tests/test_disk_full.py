"""A full disk is an answer, not a crash: a write the disk refuses answers 507 STORAGE_FULL with nothing
half-made, /health warns before it comes to that, and the worker recovers by itself once space is back.

The worker runs on a real 12 MB tmpfs, mounted in a mount namespace of its own (``unshare -rm``: no
privileges needed where user namespaces are allowed); the test fills that disk through /proc/<pid>/root.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
from pathlib import Path
from typing import Any

import aiohttp
from harness import Worker, kill_tree, wait_for

PHONE = "6281999000"


def _fill(path: Path) -> None:
    """Write ``path`` until the disk has no room left (blocking)."""
    with open(path, "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * (256 * 1024))
                filler.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


async def _send(w: Worker, text: str) -> tuple[int, dict[str, Any], str | None]:
    assert w.http is not None
    async with w.http.post(f"{w.url}/session/disk/send", json={"to": "6280100", "text": text}) as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def test_a_full_disk_answers_507_keeps_nothing_half_made_and_recovers_by_itself(tmp_path: Path) -> None:
    assert shutil.which("unshare"), "util-linux's unshare is needed"
    storage = tmp_path / "small"
    storage.mkdir()
    w = Worker(storage, {"DISK_FREE_WARN_MB": "4", "SAMPLE_INTERVAL": "0.3"})
    mount = f'mount -t tmpfs -o size=12m,mode=0700 none "{storage}" && exec "$0" "$@"'
    w.command = ["unshare", "-rm", "sh", "-c", mount, *w.command]
    w.log_path = tmp_path / "worker.log"  # outside the small disk, so the test can read it afterwards
    await w.start()
    try:
        assert w.proc is not None
        inside = Path(f"/proc/{w.proc.pid}/root") / storage.relative_to("/")
        await w.create_linked("disk", PHONE)
        status, body, _ = await _send(w, "before")
        assert status == 200, body

        await asyncio.to_thread(_fill, inside / "filler")

        async def warned() -> dict[str, Any] | None:
            _, health = await w.api("GET", "/health")
            return health if health["storage"].get("lowSpace") else None

        health = await wait_for(warned, what="the low-space warning")
        assert health["status"] in ("degraded", "unhealthy")
        status, text = await w.api("GET", "/metrics?format=prometheus")
        assert status == 200 and "wa_worker_disk_low 1.0" in text

        status, body, retry_after = await _send(w, "while full")
        assert (status, body["code"]) == (507, "STORAGE_FULL"), body
        assert retry_after is not None and int(retry_after) > 0
        # A create the disk refuses leaves no session behind (and no lease).
        status, body = await w.api("POST", "/session/create", json={"sessionId": "late"})
        assert (status, body["code"]) == (507, "STORAGE_FULL"), body
        _, listed = await w.api("GET", "/sessions")
        assert [s["sessionId"] for s in listed["data"]["sessions"]] == ["disk"]
        # A media upload the disk refuses leaves no staged file.
        form = aiohttp.FormData()
        form.add_field("to", "6280100")
        form.add_field("type", "document")
        form.add_field("file", b"%PDF-1.4\n" + b"x" * 100_000, filename="a.pdf", content_type="application/pdf")
        status, body = await w.api("POST", "/session/disk/send", data=form)
        assert (status, body["code"]) == (507, "STORAGE_FULL"), body
        staged = inside / "outgoing" / "disk"
        assert not staged.exists() or not list(staged.iterdir())

        # Space is back: the same calls work again, with no restart.
        await asyncio.to_thread((inside / "filler").unlink)

        async def sends_again() -> dict[str, Any] | None:
            status, body, _ = await _send(w, "after")
            return body if status == 200 else None

        sent = await wait_for(sends_again, what="a send once space is back")
        assert sent["data"]["status"] == "sent"
        status, body = await w.api("POST", "/session/create", json={"sessionId": "late"})
        assert status == 200, body
        assert w.proc.poll() is None  # never crashed
    finally:
        children = w.child_pids()
        await w.stop()
        await kill_tree(children)
    assert "Traceback" not in (tmp_path / "worker.log").read_text()
