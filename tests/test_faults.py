"""Real session processes misbehaving on demand (the fault engine, session_proc/sim/fault.py):
what the supervisor makes of a crash during a send, an undecidable send, a slow send and an exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import Worker, history_message, running_worker, wait_for

from session_proc.engine import EngineError
from session_proc.engines import FAULTS_ENV, engine_class
from session_proc.sim.engine import SimEngine
from session_proc.sim.fault import FaultEngine, parse_switches

PHONE = "6281666000"
PEER = "6280888"


async def _inbox(w: Worker, phone: str) -> dict[str, dict[str, Any]]:
    _, body = await w.hub("GET", f"/phones/{phone}/messages")
    return {m["id"]: m for m in body["messages"]}


def test_the_fault_engine_is_handed_out_only_under_the_test_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAULTS_ENV, raising=False)
    with pytest.raises(EngineError, match="tests only") as info:
        engine_class("fault")
    assert info.value.code == "UNKNOWN_ENGINE"
    assert engine_class("sim") is SimEngine
    monkeypatch.setenv(FAULTS_ENV, "slow_send=1")
    assert engine_class("sim") is FaultEngine  # it stands in for the sim engine, the only one it wraps
    assert engine_class("fault") is FaultEngine


def test_switches_are_parsed_and_unknown_ones_refused() -> None:
    assert parse_switches("hang=1.5, crash_on_send,sessions=a|b") == {
        "hang": "1.5",
        "crash_on_send": "",
        "sessions": "a|b",
    }
    with pytest.raises(ValueError, match="unknown switch 'hang_up'"):
        parse_switches("hang_up")


async def test_a_crash_during_a_send_is_retried_under_its_id_by_the_next_process(tmp_path: Path) -> None:
    faults = "crash_on_send,sessions=crashy,incarnations=1"
    async with running_worker(tmp_path / "w", WA_TEST_FAULTS=faults, SEND_TIMEOUT="0.5") as w:
        first = await w.create_linked("crashy", PHONE)
        status, resp = await w.api("POST", "/session/crashy/send", json={"to": PEER, "text": "through a crash"})
        assert status == 202 and resp["data"]["status"] == "pending", resp
        message_id = resp["data"]["messageId"]
        back = await w.wait_session(
            "crashy", lambda s: s["status"] == "connected" and s["pid"] not in (None, first["pid"]), what="back"
        )
        assert back["lastExit"]["reason"] == "exit code 1" and back["restarts"] == 1

        async def sent() -> dict[str, Any] | None:
            m = await history_message(w, "crashy", message_id)
            return m if m and m["status"] in ("sent", "delivered", "read") else None

        await wait_for(sent, what="the message sent by the next process")
        inbox = await _inbox(w, PEER)
        assert inbox[message_id]["deliveries"] == 1


async def test_an_undecidable_send_is_settled_unknown_and_never_resent(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", WA_TEST_FAULTS="send_unknown") as w:
        await w.create_linked("doubt", PHONE)
        status, resp = await w.api("POST", "/session/doubt/send", json={"to": PEER, "text": "maybe"})
        assert status == 200 and resp["data"]["status"] == "unknown", resp
        message = await history_message(w, "doubt", resp["data"]["messageId"])
        assert message is not None and message["status"] == "unknown"
        assert resp["data"]["messageId"] not in await _inbox(w, PEER)
        # The backend and webhooks hear of it as well: a message.status event says "unknown".
        status, body = await w.api("GET", "/events?sessionId=doubt&limit=1000")
        assert status == 200
        statuses = [
            e["data"]
            for e in body["data"]["events"]
            if e["event"] == "message.status" and e["data"]["messageId"] == resp["data"]["messageId"]
        ]
        assert [s["status"] for s in statuses] == ["unknown"], statuses


async def test_a_send_slower_than_the_send_timeout_answers_pending_then_settles(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", WA_TEST_FAULTS="slow_send=1.5", SEND_TIMEOUT="0.3") as w:
        await w.create_linked("slow", PHONE)
        status, resp = await w.api("POST", "/session/slow/send", json={"to": PEER, "text": "eventually"})
        assert status == 202 and resp["data"]["status"] == "pending", resp

        async def sent() -> dict[str, Any] | None:
            m = await history_message(w, "slow", resp["data"]["messageId"])
            return m if m and m["status"] in ("sent", "delivered", "read") else None

        await wait_for(sent, what="the slow send settled")
        assert (await _inbox(w, PEER))[resp["data"]["messageId"]]["deliveries"] == 1


async def test_an_exit_code_at_start_is_reported_as_the_last_exit(tmp_path: Path) -> None:
    env = {"RESTART_INTENSITY": "1", "RESTART_PERIOD": "60", "RESTART_BACKOFF_INITIAL": "0.05"}
    async with running_worker(tmp_path / "w", WA_TEST_FAULTS="exit=7", **env) as w:
        status, body = await w.api("POST", "/session/create", json={"sessionId": "gone"})
        assert status == 200, body
        failed = await w.wait_session("gone", lambda s: s["status"] == "failed", timeout=30, what="failed")
        assert failed["lastExit"]["reason"] == "exit code 7" and failed["lastExit"]["crashed"] is True
        assert failed["restarts"] == 1


async def test_a_leaking_session_is_restarted_at_its_memory_limit_and_its_neighbour_is_untouched(
    tmp_path: Path,
) -> None:
    # The first incarnation leaks; the one started after the kill does not (one restart, never FATAL).
    faults = "grow=40,sessions=leaky,incarnations=1"
    env = {"WA_TEST_FAULTS": faults, "SESSION_MEMORY_LIMIT_MB": "120", "SAMPLE_INTERVAL": "0.3"}
    async with running_worker(tmp_path / "w", **env) as w:
        calm = await w.create_linked("calm", "6289300002")
        first = await w.create_linked("leaky", PHONE)
        back = await w.wait_session(
            "leaky",
            lambda s: s["restarts"] >= 1 and s["pid"] not in (None, first["pid"]),
            timeout=60,
            what="restarted at its memory limit",
        )
        assert back["lastExit"]["reason"] == "memory limit", back
        status, body = await w.api("GET", "/events?sessionId=leaky&limit=1000")
        assert status == 200
        reasons = [e["data"].get("reason") for e in body["data"]["events"] if e["event"] == "disconnected"]
        assert "process memory limit; restarting" in reasons, reasons
        neighbour = await w.session("calm")
        assert (neighbour["pid"], neighbour["restarts"], neighbour["status"]) == (calm["pid"], 0, "connected")
