"""What the dashboard reads and does through the API: a process's samples, its outbox figures, and the
simulated phone (WA_ENGINE=sim) that scans a QR and writes to a session."""

from __future__ import annotations

from pathlib import Path

from harness import history_message, running_worker, wait_for

from supervisor.api.sim_routes import default_phone


async def test_samples_outbox_and_the_simulated_phone_through_the_api(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        status, body = await w.api("POST", "/session/create", json={"sessionId": "s1"})
        assert status == 200, body

        async def qr_shown() -> bool:
            _, b = await w.api("GET", "/session/s1/qr")
            return bool(b.get("success") and b["data"]["qr"])

        await wait_for(qr_shown, what="the QR")
        status, body = await w.api("POST", "/session/s1/sim/scan", json={})
        assert status == 200, body
        assert body["data"] == {"sessionId": "s1", "phoneNumber": default_phone("s1"), "linked": True}
        await w.wait_session("s1", lambda s: s["status"] == "connected", what="connected")

        # No QR to scan once linked: a 409 that says why.
        status, body = await w.api("POST", "/session/s1/sim/scan", json={})
        assert status == 409 and body["code"] == "SESSION_NOT_READY", body

        status, body = await w.api("POST", "/session/s1/sim/message", json={"phoneNumber": "6280001", "text": "hi"})
        assert status == 200, body
        sent_id = body["data"]["messageId"]

        async def received() -> bool:
            return await history_message(w, "s1", sent_id) is not None

        await wait_for(received, what="the simulated phone's message in history")

        # A phone the hub refuses (not digits) is the body's 400; an unknown session is a 404.
        status, body = await w.api("POST", "/session/s1/sim/message", json={"phoneNumber": "x", "text": "hi"})
        assert status == 400, body
        status, body = await w.api("POST", "/session/nobody/sim/scan", json={})
        assert status == 404, body

        async def sampled() -> list[dict[str, object]] | None:
            _, b = await w.api("GET", "/session/s1/samples")
            return b["data"]["samples"] if len(b["data"]["samples"]) >= 2 else None

        samples = await wait_for(sampled, what="two samples")
        assert all(isinstance(s["rss"], int) and s["rss"] > 0 for s in samples)

        # Linking changed the auth state: its backup lands, under this worker's lease.
        async def backed_up() -> dict[str, object] | None:
            _, b = await w.api("GET", "/session/s1/storage")
            return b["data"] if b["data"]["lastBackupAt"] else None

        storage = await wait_for(backed_up, what="the session's backup")
        assert storage["lease"] == "held", storage

        status, body = await w.api("GET", "/session/s1/outbox")
        assert status == 200, body
        assert body["data"] == {
            "sessionId": "s1",
            "pending": 0,
            "oldestPendingAt": None,
            "unknown": 0,
            "failed": 0,
            "messages": [],
        }


async def test_the_simulated_phone_is_refused_without_the_simulated_network(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", WA_ENGINE="neonize") as w:
        for path, body in (("scan", {}), ("message", {"phoneNumber": "6280001", "text": "hi"})):
            status, answer = await w.api("POST", f"/session/n1/sim/{path}", json=body)
            assert status == 409 and answer["code"] == "NOT_SUPPORTED", answer


async def test_a_panic_on_stderr_is_kept_for_the_operator_across_the_restart(tmp_path: Path) -> None:
    # The first incarnation panics as the Go runtime does; the second runs.
    async with running_worker(tmp_path / "w", WA_TEST_FAULTS="panic,incarnations=1") as w:
        status, body = await w.api("POST", "/session/create", json={"sessionId": "p1"})
        assert status == 200, body
        await w.wait_session("p1", lambda s: s["restarts"] >= 1 and s["processState"] == "RUNNING", what="restarted")

        async def tail() -> list[str] | None:
            _, b = await w.api("GET", "/session/p1/stderr")
            lines: list[str] = b["data"]["lines"]
            return lines if any(line.startswith("goroutine 1 [running]") for line in lines) else None

        lines = await wait_for(tail, what="the panic in the stderr tail")
        assert any(line.startswith("panic: runtime error") for line in lines), lines
        status, body = await w.api("GET", "/session/p1/process")
        assert body["data"]["exits"][-1]["code"] == 2, body["data"]["exits"]
        # Every line still reaches the worker's own stderr.
        assert "panic: runtime error: invalid memory address" in w.log()
