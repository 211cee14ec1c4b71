"""Schema-driven fuzzing: schemathesis generates requests from the worker's own
``/openapi.json`` (valid and invalid bodies, queries, ids; stateful sequences
along the document's links) against a real worker. No input may get a 5xx, and
the worker must be healthy afterwards. Bounded (few examples per operation) so
it stays well under a minute on two cores."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from harness import TOKEN, running_worker

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


async def test_no_generated_request_gets_a_server_error(tmp_path: Path) -> None:
    async with running_worker(
        tmp_path / "w",
        CREATE_QR_WAIT="0",  # create answers at once: the fuzzer makes many
        RATE_LIMIT_SESSION_OPS="40",  # bounds how many session processes the fuzzer can start
    ) as w:
        proc = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "run",
            f"{w.url}/openapi.json",
            "--header",
            f"X-Worker-Token: {TOKEN}",
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "15",
            "--workers",
            "1",
            "--seed",
            "20261129",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--no-color",
            "--report-dir",
            str(tmp_path / "report"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
        report = out.decode(errors="replace")
        assert proc.returncode == 0, report[-8000:]
        assert "generated" in report and "passed" in report, report[-2000:]

        # still healthy, nothing unhandled in its log, and every process it started still supervised
        status, health = await w.api("GET", "/health")
        assert status == 200 and health["status"] == "healthy", health
        assert "unhandled error" not in w.log()
        status, body = await w.api("GET", "/sessions")
        assert status == 200
        for session in body["data"]["sessions"]:
            assert session["status"] != "failed", session
