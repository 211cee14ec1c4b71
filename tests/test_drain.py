"""Graceful drain on SIGTERM, against a real worker, real session processes and a standalone hub.

The hub runs on its own (``wa-worker sim``) so it outlives the worker: what the
phone received can be read after the worker is gone, and again after the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import Worker, pid_alive, standalone_hub, wait_for

from supervisor.drain import DRAIN_STEPS, EXIT_FORCED, DrainPlan

LINKED = "6281700001"
RECIPIENT = "6281700999"
DRAIN_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class Outcome:
    text: str
    status: int | None  # None: no HTTP answer (connection refused or closed)
    body: Any


async def _inbox(hub_url: str, phone: str) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{hub_url}/phones/{phone}/messages") as resp:
        body = await resp.json()
    return {m["id"]: m for m in body["messages"]}


async def _sender(w: Worker, prefix: str, outcomes: list[Outcome]) -> None:
    """Send one message after another until the worker refuses or is gone."""
    async with aiohttp.ClientSession(headers={"X-Worker-Token": "test-token-0123456789"}) as http:
        n = 0
        while True:
            text = f"{prefix}-{n}"
            n += 1
            try:
                async with http.post(f"{w.url}/session/drain/send", json={"to": RECIPIENT, "text": text}) as resp:
                    outcomes.append(Outcome(text, resp.status, await resp.json(content_type=None)))
                    if resp.status == 503:
                        return
            except (aiohttp.ClientError, ConnectionError) as exc:
                outcomes.append(Outcome(text, None, repr(exc)))
                return


async def _wait_exit(w: Worker, timeout: float) -> int:
    assert w.proc is not None
    proc = w.proc

    async def exited() -> int | None:
        code = proc.poll()
        return None if code is None else code + 1000  # 0 must count as "exited"

    return await wait_for(exited, timeout=timeout, what="worker exit") - 1000


async def test_sigterm_during_a_burst_of_sends_loses_nothing(tmp_path: Path) -> None:
    async with standalone_hub(tmp_path) as hub_env:
        # SEND_TIMEOUT short: a send the network holds up answers 202 (accepted, in the outbox) quickly.
        env = {**hub_env, "DRAIN_TIMEOUT": str(DRAIN_TIMEOUT), "RATE_LIMIT_SEND_PER_SESSION": "0", "SEND_TIMEOUT": "2"}
        w = Worker(tmp_path / "w", env)
        await w.start()
        try:
            await w.create_linked("drain", LINKED)
            # Every send waits on the network a while, so the signal finds some of them under way.
            status, _ = await w.hub("POST", "/faults", json={"latencyMs": 150})
            assert status == 200
            outcomes: list[Outcome] = []
            senders = [asyncio.create_task(_sender(w, f"burst{k}", outcomes)) for k in range(4)]

            async def some_sent() -> bool:
                return sum(o.status == 200 for o in outcomes) >= 8

            await wait_for(some_sent, what="a few sends answered")
            children = w.child_pids()
            assert children, "the session process runs under the worker"
            # From now on the network refuses sends for a while: what is under way or comes next is
            # accepted but not confirmed before the worker is gone, so only the next start can send it.
            status, _ = await w.hub("POST", "/faults", json={"refuseSendsSeconds": 4})
            assert status == 200
            assert w.proc is not None
            w.proc.send_signal(signal.SIGTERM)
            code = await _wait_exit(w, DRAIN_TIMEOUT + 10)
            await asyncio.wait_for(asyncio.gather(*senders), 30)
        finally:
            leftovers = [p for p in w.child_pids() if pid_alive(p)]
            await w.stop(signal.SIGKILL)

        log = w.log()
        assert code == 0, log
        assert not leftovers and not [p for p in children if pid_alive(p)], "no process outlives the worker"
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        drain_steps = [
            line["msg"].split()[1]
            for line in lines
            if line.get("msg", "").startswith("drain: ") and line["msg"].split()[1] in DRAIN_STEPS
        ]
        # The worker's own steps ran, in the plan's order, with whatever other parts registered
        # (backup_auth: storage's step, auth state to object storage before the processes stop).
        assert {"stop_accepting", "finish_sends", "stop_sessions"} <= set(drain_steps), drain_steps
        assert drain_steps == sorted(drain_steps, key=DRAIN_STEPS.index), drain_steps

        accepted = {o.body["data"]["messageId"]: o for o in outcomes if o.status in (200, 202)}
        refused = [o for o in outcomes if o.status not in (200, 202)]
        assert len(refused) == 4, "each sender ends on a refusal or a closed connection"
        for o in refused:
            if o.status is not None:
                assert o.status == 503 and o.body["code"] == "SHUTTING_DOWN", o
        # A 200 means the network confirmed it: it is on the phone already.
        sent = {mid for mid, o in accepted.items() if o.status == 200}
        inbox = await _inbox(f"http://127.0.0.1:{hub_env['SIM_PORT']}", RECIPIENT)
        assert sent <= set(inbox)
        assert any(o.status == 202 for o in accepted.values()), "some sends were accepted but not confirmed"
        # Whatever was accepted but not confirmed is in the outbox: the next start sends it.
        w2 = Worker(tmp_path / "w", env)
        await w2.start()
        try:
            hub_url = f"http://127.0.0.1:{hub_env['SIM_PORT']}"

            async def all_delivered() -> bool:
                return set(accepted) <= set(await _inbox(hub_url, RECIPIENT))

            await wait_for(all_delivered, timeout=60, what="every accepted message on the phone")
            inbox = await _inbox(hub_url, RECIPIENT)
            assert {inbox[mid]["text"] for mid in accepted} == {o.text for o in accepted.values()}
            # Nothing sent that was refused.
            assert not {o.text for o in refused} & {m["text"] for m in inbox.values()}
        finally:
            children = w2.child_pids()
            await w2.stop()
            for pid in children:
                assert not pid_alive(pid)


async def test_second_sigterm_forces_the_exit(tmp_path: Path) -> None:
    async with standalone_hub(tmp_path) as hub_env:
        # A long drain: the sends below wait on a slow network, so only the second signal ends it early.
        w = Worker(tmp_path / "w", {**hub_env, "DRAIN_TIMEOUT": "600", "SEND_TIMEOUT": "300"})
        await w.start()
        try:
            await w.create_linked("drain", LINKED)
            status, faults = await w.hub("POST", "/faults", json={"latencyMs": 60_000})
            assert status == 200, faults
            outcomes: list[Outcome] = []
            sender = asyncio.create_task(_sender(w, "slow", outcomes))

            async def send_waiting() -> bool:
                _, body = await w.api("GET", "/session/drain/messages")
                return bool(body["data"]["pagination"]["total"])

            await wait_for(send_waiting, what="a send waiting on the network")
            children = w.child_pids()
            assert w.proc is not None
            w.proc.send_signal(signal.SIGTERM)

            async def draining() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    status, body = await w.api("GET", "/health")
                    return status == 503 and body["status"] == "draining"
                return False

            await wait_for(draining, what="/health says draining")
            w.proc.send_signal(signal.SIGTERM)
            code = await _wait_exit(w, 30)
            await asyncio.wait_for(sender, 30)
        finally:
            await w.stop(signal.SIGKILL)
        assert code == EXIT_FORCED, w.log()
        assert "forced exit: second SIGTERM" in w.log()
        assert not [p for p in children if pid_alive(p)], "no process outlives the worker"
        assert outcomes and outcomes[-1].status is None  # the waiting send got no answer: the worker is gone


async def test_the_deadline_forces_the_exit(tmp_path: Path) -> None:
    async with standalone_hub(tmp_path) as hub_env:
        w = Worker(tmp_path / "w", {**hub_env, "DRAIN_TIMEOUT": "2", "SEND_TIMEOUT": "300"})
        await w.start()
        try:
            await w.create_linked("drain", LINKED)
            status, faults = await w.hub("POST", "/faults", json={"latencyMs": 60_000})
            assert status == 200, faults
            sender = asyncio.create_task(_sender(w, "slow", []))

            async def send_waiting() -> bool:
                _, body = await w.api("GET", "/session/drain/messages")
                return bool(body["data"]["pagination"]["total"])

            await wait_for(send_waiting, what="a send waiting on the network")
            children = w.child_pids()
            assert w.proc is not None
            w.proc.send_signal(signal.SIGTERM)
            code = await _wait_exit(w, 30)
            await asyncio.wait_for(sender, 30)
        finally:
            await w.stop(signal.SIGKILL)
        log = w.log()
        # The waiting send holds the HTTP server open past the deadline: the deadline ends it all.
        assert code == EXIT_FORCED, log
        assert "forced exit: drain deadline of 2s passed" in log
        assert not [p for p in children if pid_alive(p)], "no process outlives the worker"


async def test_drain_plan_runs_registered_steps_in_order_and_survives_failures() -> None:
    plan = DrainPlan()
    calls: list[str] = []

    def step(name: str, *, fail: bool = False, hang: bool = False) -> Any:
        async def run() -> None:
            calls.append(name)
            if fail:
                raise RuntimeError("boom")
            if hang:
                await asyncio.Event().wait()

        return run

    plan.register("deregister", step("deregister"))
    plan.register("backup_auth", step("backup_auth", hang=True))
    plan.register("flush_events", step("flush_events", fail=True))
    plan.register("stop_sessions", step("stop_sessions"))
    plan.register("stop_accepting", step("stop_accepting"))
    await plan.run(time.monotonic() + 0.5)
    assert calls == ["stop_accepting", "flush_events", "backup_auth", "stop_sessions", "deregister"]
    assert plan.ran == calls
    with pytest.raises(ValueError, match="unknown drain step"):
        plan.register("flush_everything", step("x"))
