"""The simulated network's phone registry, through a real hub process's HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import standalone_hub


@pytest.fixture
async def hub_url(tmp_path: Path) -> AsyncIterator[str]:
    async with standalone_hub(tmp_path) as env:
        yield f"http://127.0.0.1:{env['SIM_PORT']}"


async def call(method: str, url: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.request(method, url, json=body) as resp:
        return resp.status, await resp.json()


async def test_a_number_joins_and_changes_its_profile(hub_url: str) -> None:
    assert await call("GET", f"{hub_url}/phones/628111/profile") == (
        404,
        {"error": "628111 is not on WhatsApp: POST /phones first", "code": "NOT_ON_WHATSAPP"},
    )
    status, joined = await call("POST", f"{hub_url}/phones", {"phone": "628111", "pushName": "Ana"})
    assert status == 201
    assert joined["jid"] == "628111@s.whatsapp.net"
    assert (joined["pushName"], joined["about"], joined["pictureUrl"]) == ("Ana", None, None)

    status, changed = await call("PUT", f"{hub_url}/phones/628111/profile", {"about": "at work"})
    assert status == 200
    assert (changed["pushName"], changed["about"]) == ("Ana", "at work")  # left out: kept
    status, seen = await call("GET", f"{hub_url}/phones/628111/profile")
    assert (status, seen) == (200, changed)
    status, listed = await call("GET", f"{hub_url}/phones")
    assert (status, listed) == (200, {"phones": [changed]})


async def test_profile_of_a_number_not_on_whatsapp_cannot_be_set(hub_url: str) -> None:
    status, body = await call("PUT", f"{hub_url}/phones/628222/profile", {"pushName": "Bo"})
    assert (status, body["code"]) == (404, "NOT_ON_WHATSAPP")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/phones", {"phone": "+62 811"}),
        ("POST", "/phones", {}),
        ("POST", "/phones", {"phone": "628111", "pushName": 5}),
        ("PUT", "/phones/62x/profile", {"about": "x"}),
        ("GET", "/phones/62x/profile", None),
    ],
)
async def test_bad_input_is_refused_with_a_code(hub_url: str, method: str, path: str, body: Any) -> None:
    status, answer = await call(method, hub_url + path, body)
    assert status == 400
    assert answer["code"] in {"INVALID_PHONE", "BAD_REQUEST"}
