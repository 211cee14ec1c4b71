"""``/dashboard`` in a real browser: headless Chromium (Debian's package) driven over the DevTools
protocol (tests/cdp_browser.py) against a worker on the simulated network. Each test keeps PNG
screenshots of what it ended on under its temporary directory."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import aiohttp
from cdp_browser import Page, chromium_page
from harness import TOKEN, Worker, running_worker, wait_for

from supervisor.api.dashboard_routes import CONTENT_SECURITY_POLICY


async def _sign_in(page: Page, token: str) -> None:
    await page.wait("document.getElementById('token') && !document.getElementById('view-signin').hidden")
    await page.eval(f"document.getElementById('token').value = {token!r}")
    await page.eval("document.querySelector('#signin-form button[type=submit]').click()")


def _row(sid: str, expression: str) -> str:
    """JavaScript: ``expression`` about the table row of ``sid`` (``r``), false while there is none."""
    return (
        f"(() => {{ const r = document.querySelector('tr[data-session=\"{sid}\"]'); return !!r && ({expression}); }})()"
    )


def _rows() -> str:
    """JavaScript: the session ids of the table's rows, in the order shown, joined by commas."""
    return "[...document.querySelectorAll('#sessions-body tr')].map((r) => r.dataset.session).join(',')"


def _set(field: str, value: str, event: str) -> str:
    """JavaScript: type ``value`` into the form field ``field`` as the operator would (``event`` follows)."""
    return (
        f"(() => {{ const f = document.getElementById({field!r}); f.value = {value!r};"
        f" f.dispatchEvent(new Event({event!r})); }})()"
    )


def _fact(title: str, name: str) -> str:
    """JavaScript: the text of the fact ``name`` in the overview's card ``title``, null while there is none."""
    return (
        "(() => { const card = [...document.querySelectorAll('#overview .card')]"
        f".find((c) => c.querySelector('h3').textContent === {title!r});"
        f" const dt = card && [...card.querySelectorAll('dt')].find((d) => d.textContent === {name!r});"
        " return dt ? dt.nextElementSibling.textContent : null; })()"
    )


async def _error_text(page: Page, what: str) -> str:
    text: str = await page.wait(
        "!document.getElementById('error').hidden && document.getElementById('error-text').textContent", what=what
    )
    return text


def _corrupt_database(w: Worker) -> None:
    """Garbage over the database and its WAL and index headers: SQLite calls it "not a database"."""
    db = w.storage / "worker.db"
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if path.exists():
            with open(path, "r+b") as f:
                f.write(b"\xff" * 4096)


async def _pid(w: Worker, sid: str) -> int:
    status, body = await w.api("GET", f"/session/{sid}/process")
    assert status == 200, body
    pid = body["data"]["pid"]
    assert isinstance(pid, int)
    return pid


async def test_dashboard_is_served_with_a_policy_allowing_only_its_origin(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w, aiohttp.ClientSession() as anon:
        async with anon.get(f"{w.url}/dashboard") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            html = await resp.text()
        assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "script-src 'self'" in CONTENT_SECURITY_POLICY
        references = re.findall(r'(?:src|href)="([^"#]+)"', html)
        assert references and all(r.startswith("/dashboard/") for r in references), references
        assert "<script>" not in html and "style=" not in html  # nothing inline: the policy would block it
        for asset in ("dashboard.js", "dashboard.css"):
            async with anon.get(f"{w.url}/dashboard/assets/{asset}") as resp:
                assert resp.status == 200, asset
                assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        async with anon.get(f"{w.url}/dashboard/assets/index.html") as resp:  # only the listed files
            assert resp.status == 404
        # The API the page calls still wants the token.
        async with anon.get(f"{w.url}/sessions") as resp:
            assert resp.status == 401


async def test_dashboard_in_a_browser_from_sign_in_to_a_linked_session(tmp_path: Path) -> None:
    # Two sends a minute per session: the third shows the 429 with how long to wait. A process stays
    # STARTING 2 s after READY (RESTART_START_SECS), past the table's re-read after a status event.
    env = {"RATE_LIMIT_SEND_PER_SESSION": "2", "RESTART_START_SECS": "2"}
    async with running_worker(tmp_path / "w", **env) as w, chromium_page(tmp_path / "profile") as page:
        await page.goto(f"{w.url}/dashboard")

        # A wrong token is an error the operator can act on, and no session is shown.
        await _sign_in(page, "not-the-token")
        text = await page.wait(
            "!document.getElementById('error').hidden && document.getElementById('error-text').textContent",
            what="the error banner",
        )
        assert "token was refused" in text, text
        assert await page.eval("document.getElementById('view-sessions').hidden")
        await page.screenshot(tmp_path / "wrong-token.png")
        assert await page.eval("sessionStorage.length") == 0

        await _sign_in(page, TOKEN)
        await page.wait("!document.getElementById('view-sessions').hidden", what="the sessions table")
        assert TOKEN not in await page.eval("location.href")

        # Create a session from the page: its page shows the QR as an image.
        await page.eval("location.hash = '#/create'")
        await page.wait("!document.getElementById('view-create').hidden")
        await page.eval(
            "document.getElementById('c-id').value = 'shop1';"
            "document.getElementById('c-name').value = 'Shop one';"
            "document.querySelector('#create-form button[type=submit]').click()"
        )
        await page.wait(
            "!document.getElementById('qr-card').hidden"
            " && document.getElementById('qr-img').src.startsWith('data:image/png')",
            what="the QR image",
        )
        assert re.match(r"Expires in \d+ s", await page.eval("document.getElementById('qr-expiry').textContent"))

        # A test message before the phone is linked: the 409 is shown with what to do.
        await page.eval(
            "document.getElementById('send-to').value = '6281111';"
            "document.querySelector('#send-form button[type=submit]').click()"
        )
        text = await page.wait(
            "!document.getElementById('error').hidden && document.getElementById('error-text').textContent",
            what="the 409 shown",
        )
        assert "current state" in text, text
        await page.eval("document.getElementById('error-close').click()")
        # The page of a session waiting for its scan, with a few samples in its charts (README's screenshot).
        await page.wait(
            "loadCharts('shop1').then(() => document.querySelector('#chart-mem polyline').points.length > 6)",
            what="samples of the new process",
        )
        assert re.match(r"Expires in \d+ s", await page.eval("document.getElementById('qr-expiry').textContent"))
        await page.screenshot(tmp_path / "session-qr-1280.png")

        # The simulated phone scans: the page follows without a reload.
        await page.eval("document.getElementById('sim-scan').click()")
        await page.wait("document.querySelector('#s-facts .badge').textContent === 'connected'", what="connected")
        await page.wait("!document.getElementById('phone-card').hidden", what="the phone panel")

        # The simulated phone writes to the session: the message shows in the session's history.
        await page.eval("document.querySelector('#phone-form button[type=submit]').click()")
        await page.wait(
            "document.getElementById('s-history').textContent.includes('message.received')", what="message.received"
        )
        # A test text from the session to another simulated phone, which must be linked to receive it.
        await w.create_linked("peer", "6285550000")
        await page.eval(
            "document.getElementById('send-to').value = '6285550000';"
            "document.querySelector('#send-form button[type=submit]').click()"
        )
        await page.wait("document.getElementById('send-result').textContent.includes(': sent')", what="sent")
        # A third send within the minute is over the limit: the 429 says how long to wait.
        await page.eval("document.querySelector('#send-form button[type=submit]').click()")
        text = await _error_text(page, "the 429 shown")
        assert re.search(r"Too many requests: .*Wait \d+ s and try again", text), text
        await page.eval("document.getElementById('error-close').click()")
        await page.wait("document.getElementById('s-history').textContent.includes('message.status')")
        # The charts draw the process's samples (loadCharts is the page's own function).
        await page.wait(
            "loadCharts('shop1').then(() => document.querySelector('#chart-mem polyline').points.length > 2)",
            what="the memory chart",
        )
        await page.screenshot(tmp_path / "session-1280.png")
        await page.viewport(390, 844)
        await page.screenshot(tmp_path / "session-390.png")
        await page.viewport(1280, 900)

        # The table, live: a session linked meanwhile turns connected, without a reload.
        await page.eval("location.hash = '#/sessions'")
        await page.wait(_row("shop1", "r.dataset.status === 'connected'"), what="shop1 in the table")
        await page.eval("window.notReloaded = true")
        await w.create_linked("live1", "6285551111")
        await page.wait(_row("live1", "r.dataset.status === 'connected'"), what="live1 connected in the table")
        status, body = await w.api("POST", "/session/create", json={"sessionId": "wait1", "sessionName": "Front desk"})
        assert status == 200, body
        await page.wait(_row("wait1", "r.dataset.status === 'qr_ready'"), what="wait1 waiting for its scan")

        # Its process is killed: the restart and the exit's reason show, without a reload; and the process,
        # RUNNING again (no event says so), is shown RUNNING. The 10 s re-read is stopped: only the events
        # and what the page does after them move the row.
        await page.eval("clearInterval(state.refreshTimer)")
        os.kill(await _pid(w, "live1"), signal.SIGKILL)
        await page.wait(
            _row(
                "live1",
                "r.querySelector('[data-col=restarts]').textContent === '1'"
                " && r.querySelector('[data-col=lastExit]').textContent.includes('SIGKILL')",
            ),
            what="live1's restart and last exit",
        )
        await w.wait_session("live1", lambda s: s["processState"] == "RUNNING", what="live1 running again")
        await page.wait(
            _row("live1", "r.dataset.status === 'connected' && r.textContent.includes('RUNNING')"),
            what="live1's process shown RUNNING",
        )
        assert await page.eval("window.notReloaded === true")
        await page.screenshot(tmp_path / "sessions-1280.png")
        await page.viewport(390, 844)
        await page.screenshot(tmp_path / "sessions-390.png")
        await page.viewport(1280, 900)

        # Search by id, filter by status, sort by a column.
        assert await page.eval(_rows()) == "live1,peer,shop1,wait1"  # by session id, ascending
        await page.eval(_set("search", "shop", "input"))
        await page.wait(f"{_rows()} === 'shop1'", what="the search for shop")
        assert await page.eval("document.getElementById('session-count').textContent") == "(1 of 4)"
        await page.eval(_set("search", "", "input"))
        for chosen, shown in (("qr_ready", "wait1"), ("connected", "live1,peer,shop1"), ("", "live1,peer,shop1,wait1")):
            await page.eval(_set("status-filter", chosen, "change"))
            await page.wait(f"{_rows()} === {shown!r}", what=f"the rows of status {chosen or 'all'}")
        restarts = "document.querySelector('#sessions-table button[data-sort=restarts]')"
        await page.eval(f"{restarts}.click()")  # ascending; equal counts by session id
        await page.wait(f"{_rows()} === 'peer,shop1,wait1,live1'", what="sorted by restarts")
        await page.eval(f"{restarts}.click()")
        await page.wait(f"{_rows()} === 'live1,peer,shop1,wait1'", what="sorted by restarts, descending")
        assert await page.eval(f"{restarts}.closest('th').getAttribute('aria-sort')") == "descending"
        by_id = "document.querySelector('#sessions-table button[data-sort=sessionId]')"
        await page.eval(f"{by_id}.click(); {by_id}.click()")
        await page.wait(f"{_rows()} === 'wait1,shop1,peer,live1'", what="sorted by session id, descending")

        # The worker's overview reads /health and /metrics for the operator: the figures, not just cards.
        await page.eval("location.hash = '#/overview'")
        await page.wait(_fact("Sessions", "connected") + " === '3'", what="the sessions by status")
        assert await page.eval(_fact("Sessions", "qr_ready")) == "1"
        assert await page.eval(_fact("Sessions", "Total")) == "4 of at most 50"
        assert await page.eval(_fact("Health", "Status")) == "healthy"
        assert await page.eval(_fact("Health", "Engine")) == "sim"
        assert re.fullmatch(r"\d+\.\d MiB USS", await page.eval(_fact("Resources", "Supervisor memory")))
        assert re.fullmatch(r"4 using \d+\.\d MiB USS", await page.eval(_fact("Resources", "Session processes")))
        assert await page.eval(_fact("Messages", "Sent")) == "1"
        assert (await page.eval("document.getElementById('overview-state').textContent")).startswith("Healthy")
        await page.screenshot(tmp_path / "overview-1280.png")

        # Signing out forgets the token.
        await page.eval("document.getElementById('sign-out').click()")
        await page.wait("!document.getElementById('view-signin').hidden")
        assert await page.eval("sessionStorage.length") == 0
        assert not [line for line in page.console if "Content Security Policy" in line], page.console


async def test_dashboard_shows_an_unhealthy_worker_and_why(tmp_path: Path) -> None:
    # /health answers 503 with its figures when the database is unusable: the page shows them, the state
    # and why, and still knows the engine (the simulated phone's button under the QR).
    async with running_worker(tmp_path / "w") as w, chromium_page(tmp_path / "profile") as page:
        status, body = await w.api("POST", "/session/create", json={"sessionId": "q1"})
        assert status == 200, body
        await w.wait_session("q1", lambda s: s["status"] == "qr_ready", what="q1's QR")
        _corrupt_database(w)

        async def unhealthy() -> bool:
            status, body = await w.api("GET", "/health")
            return status == 503 and body["status"] == "unhealthy"

        await wait_for(unhealthy, timeout=10, what="/health 503")

        await page.goto(f"{w.url}/dashboard#/session/q1")
        await _sign_in(page, TOKEN)
        await page.wait(
            "!document.getElementById('qr-card').hidden && !document.getElementById('sim-scan').hidden",
            what="the QR with the simulated phone's button",
        )

        await page.eval("location.hash = '#/overview'")
        state = "document.getElementById('overview-state')"
        line = await page.wait(f"!{state}.hidden && {state}.textContent", what="the worker's state")
        assert line.startswith("Unhealthy (/health answers 503"), line
        assert "the database cannot be used (DatabaseError)" in line, line
        assert await page.eval(_fact("Health", "Status")) == "unhealthy"
        assert await page.eval(_fact("Sessions", "qr_ready")) == "1"
        assert await page.eval(_fact("Storage and backend", "Database")) == "error (DatabaseError)"
        assert re.fullmatch(r"\d+\.\d MiB USS", await page.eval(_fact("Resources", "Supervisor memory")))
        # /metrics reads the database: its part says it is not available, and why.
        assert "Not available: Error 500" in await page.eval("document.getElementById('overview').textContent")
        await page.screenshot(tmp_path / "overview-unhealthy-1280.png")
