"""A headless Chromium (Debian's package) driven over the DevTools protocol with aiohttp's websocket
client: no driver binary, no browser download. Enough to click, type, wait and take screenshots."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = (
    "--headless",
    "--no-sandbox",  # the suite runs as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    # Every host but ours fails to resolve: a page must render from the worker alone.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


class BrowserError(AssertionError):
    """The page threw, or a wait ran out: the message carries what the page showed."""


class Page:
    """One tab: commands go out with an id, their answers come back on the same websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._answers: set[asyncio.Future[dict[str, Any]]] = set()
        self.console: list[str] = []  # console messages and uncaught exceptions, for failure messages
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif data.get("method") == "Page.javascriptDialogOpening":
                # confirm() before a delete: the operator says yes.
                answer = asyncio.ensure_future(self.send("Page.handleJavaScriptDialog", accept=True))
                self._answers.add(answer)
                answer.add_done_callback(self._answers.discard)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(data["params"]["exceptionDetails"])[:2000])
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(BrowserError("the browser closed the connection"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one DevTools command and return its result."""
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        async with asyncio.timeout(30):
            answer = await future
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {json.dumps(result['exceptionDetails'])[:2000]}")
        return result["result"].get("value")

    async def wait(self, expression: str, *, timeout: float = 20, what: str = "") -> Any:
        """Wait until ``expression`` is truthy in the page; its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if loop.time() > deadline:
                body = await self.eval("document.body.innerText")
                raise BrowserError(f"waited {timeout}s for {what or expression}; page:\n{body[:3000]}\n{self.console}")
            await asyncio.sleep(0.1)

    async def goto(self, url: str) -> None:
        """Load ``url`` and wait for its document."""
        await self.send("Page.navigate", url=url)
        await self.wait("document.readyState === 'complete'", what=f"{url} to load")

    async def viewport(self, width: int, height: int) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=width < 600
        )

    async def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (past the viewport too)."""
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def chromium_page(profile: Path, *, width: int = 1280, height: int = 900) -> AsyncIterator[Page]:
    """A headless Chromium with one blank tab; every host but 127.0.0.1 fails to resolve (nothing from the
    internet can load). The browser is ended when the block ends."""
    assert CHROMIUM, "chromium is missing: scripts/system-deps installs it (apt-get install chromium)"
    await asyncio.to_thread(profile.mkdir, parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *HEADLESS,
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(30):
            while not port_file.exists() or not port_file.read_text().strip():
                await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(url, max_msg_size=0) as ws:
                page = Page(ws)
                try:
                    await page.send("Page.enable")
                    await page.send("Runtime.enable")
                    await page.viewport(width, height)
                    yield page
                finally:
                    await page.close()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
