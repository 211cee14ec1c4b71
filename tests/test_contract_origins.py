"""The suite's contract check forgets a test's servers when the test ends: a later test's server that is
not the API (a sim hub, a fake) may be given one of their ports by the kernel."""

from __future__ import annotations

import socket

import aiohttp
import contract
from aiohttp import web

# The port a test's worker served on, handed to the next test (as the kernel may hand it out again).
PORT: list[int] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_worker_is_watched_on_its_port() -> None:
    port = _free_port()
    contract.watch(f"http://127.0.0.1:{port}")
    PORT.append(port)


async def test_a_later_server_on_that_port_is_not_checked_as_the_api() -> None:
    assert PORT, "runs after test_a_worker_is_watched_on_its_port"

    async def refuse(_: web.Request) -> web.Response:
        return web.json_response({"reason": "not the API's error shape"}, status=400)

    app = web.Application()
    app.router.add_post("/phones", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", PORT[0])
    await site.start()
    try:
        async with aiohttp.ClientSession() as http, http.post(f"http://127.0.0.1:{PORT[0]}/phones") as resp:
            assert resp.status == 400
            await resp.read()
    finally:
        await runner.cleanup()
