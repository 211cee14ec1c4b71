"""``/docs`` in a real browser: headless Chromium (Debian's package) renders every operation of the
OpenAPI 3.1 document, with every other host unreachable, so nothing comes from the internet."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
from cdp_browser import CHROMIUM, HEADLESS
from harness import running_worker

from supervisor.api.openapi import document


async def _chromium(url: str, *args: str) -> str:
    assert CHROMIUM, "chromium is missing: scripts/system-deps installs it (apt-get install chromium)"
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *HEADLESS,
        "--virtual-time-budget=15000",
        "--window-size=1280,2400",
        *args,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(90):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return out.decode(errors="replace")


async def test_docs_render_every_operation_in_a_headless_browser(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w, aiohttp.ClientSession() as anon:
        async with anon.get(f"{w.url}/docs") as resp:
            assert resp.status == 200
            html = await resp.text()
        # The page loads its scripts and styles from this worker only (relative paths, no other origin).
        references = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert references and all(r.startswith("/") and not r.startswith("//") for r in references), references

        dom = await _chromium(f"{w.url}/docs", "--dump-dom")
        assert "Unable to render this definition" not in dom
        assert "WhatsApp worker API" in dom
        rendered = set(re.findall(r'data-path="([^"]+)"', dom))
        for path, ops in document()["paths"].items():
            assert path in rendered, (path, sorted(rendered))
            for method in ops:
                assert f"opblock-{method} " in dom or f'opblock-{method}"' in dom, method

        screenshot = tmp_path / "docs.png"
        await _chromium(f"{w.url}/docs", f"--screenshot={screenshot}")
        assert screenshot.stat().st_size > 10_000  # a page was drawn, not an empty canvas
