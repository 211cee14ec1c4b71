"""The worker end to end: real supervisor, real session processes, the simulated network."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import psutil
import pytest
import zmq
import zmq.asyncio
from harness import TOKEN, Worker, clean_env, free_port, kill_tree, pid_alive, running_worker, standalone_hub, wait_for

from supervisor.app import socket_dir
from supervisor.config import load
from supervisor.timefmt import epoch


async def test_create_link_send_and_receive(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        status, body = await w.api("POST", "/session/create", json={"sessionId": "alice", "userId": "u1"})
        assert status == 200 and body["success"] is True
        assert body["data"]["sessionId"] == "alice"
        # The create call waits briefly for the first QR and hands it out as a PNG.
        assert body["data"]["status"] == "qr_ready"
        assert body["data"]["qrCode"].startswith("data:image/png;base64,")

        status, qr = await w.api("GET", "/session/alice/qr")
        assert status == 200 and qr["data"]["qr"] and epoch(qr["data"]["expiresAt"]) > time.time()

        await w.hub("POST", "/phones/6281111/scan", json={"qr": qr["data"]["qr"]})
        await w.wait_session("alice", lambda s: s["status"] == "connected")
        status, st = await w.api("GET", "/session/alice/status")
        assert st["data"]["phoneNumber"] == "6281111" and st["data"]["status"] == "connected"

        status, sent = await w.api("POST", "/session/alice/send", json={"to": "6289999", "text": "hello"})
        assert status == 200, sent
        message_id = sent["data"]["messageId"]
        assert sent["data"]["status"] == "sent" and message_id.startswith("3EB0")
        _, inbox = await w.hub("GET", "/phones/6289999/messages")
        [received] = inbox["messages"]
        assert received["id"] == message_id and received["text"] == "hello" and received["deliveries"] == 1
        assert received["from"] == "6281111"

        # A phone writes to the linked number: the session process hands it to the supervisor.
        _, pushed = await w.hub("POST", "/phones/6289999/messages", json={"to": "6281111", "text": "hi back"})

        async def logged() -> bool:
            return pushed["id"] in w.log() and "message received" in w.log()

        await wait_for(logged, what="incoming message in the worker's log")
        assert "hi back" not in w.log()  # message text never reaches the log
        await w.wait_session("alice", lambda s: s["messageCount"] == 2)


async def test_sigkill_child_comes_back_without_new_qr(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        a = await w.create_linked("a", "6281000001")
        b = await w.create_linked("b", "6281000002")
        os.kill(a["pid"], signal.SIGKILL)
        back = await w.wait_session(
            "a", lambda s: s["status"] == "connected" and s["pid"] not in (None, a["pid"]), what="a reconnected"
        )
        assert back["restarts"] == 1
        assert back["qrCount"] == a["qrCount"]  # reconnected with stored credentials, no new scan
        assert back["lastExit"]["reason"] == "killed by SIGKILL"
        assert back["lastExit"]["crashed"] is True
        other = await w.session("b")
        assert other["pid"] == b["pid"] and other["status"] == "connected" and other["restarts"] == 0
        # ...and it still works.
        status, sent = await w.api("POST", "/session/a/send", json={"to": "6289999", "text": "after crash"})
        assert status == 200, sent


async def test_hung_event_loop_is_detected_killed_and_replaced(tmp_path: Path) -> None:
    # The first process of "hang" blocks its event loop a moment after it connects (the fault engine).
    async with running_worker(tmp_path / "w", WA_TEST_FAULTS="hang=0.5,sessions=hang,incarnations=1") as w:
        a = await w.create_linked("hang", "6282000001")
        back = await w.wait_session(
            "hang",
            lambda s: s["status"] == "connected" and s["pid"] not in (None, a["pid"]),
            timeout=30,
            what="hung child replaced",
        )
        assert back["lastExit"]["reason"] == "heartbeat timeout"
        assert back["restarts"] == 1
        assert not pid_alive(a["pid"])
        assert "fault engine: blocking the event loop" in w.log()


async def test_children_exit_when_supervisor_is_killed(tmp_path: Path) -> None:
    w = Worker(tmp_path / "w")
    await w.start()
    try:
        await w.create_linked("orphan1", "6283000001")
        await w.create_linked("orphan2", "6283000002")
        children = w.child_pids()
        assert len(children) >= 3  # two sessions and the hub
        await w.stop(signal.SIGKILL)

        async def all_gone() -> bool:
            return not any(pid_alive(p) for p in children)

        # Liveness is 4 x 0.5 s; PR_SET_PDEATHSIG usually ends them at once.
        await wait_for(all_gone, timeout=10, what="children to exit after the supervisor died")
    finally:
        await kill_tree(w.child_pids())


async def test_crash_loop_ends_failed_with_reason(tmp_path: Path) -> None:
    env = {"RESTART_INTENSITY": "3", "RESTART_PERIOD": "60", "RESTART_BACKOFF_INITIAL": "0.05"}
    # Every process of "broken" fails at start (the fault engine); "fine" beside it is not touched.
    async with running_worker(tmp_path / "w", WA_TEST_FAULTS="fail_start,sessions=broken", **env) as w:
        fine = await w.create_linked("fine", "6284000002")
        status, body = await w.api("POST", "/session/create", json={"sessionId": "broken"})
        assert status == 200, body
        failed = await w.wait_session("broken", lambda s: s["status"] == "failed", timeout=30, what="failed")
        assert failed["processState"] == "FATAL"
        assert failed["pid"] is None
        assert "crashed" in failed["lastError"] and failed["lastExit"]["reason"] == "exit code 1"
        assert failed["restarts"] == 3
        assert "FAULT_INJECTED" in w.log()
        # It stays down: no process comes back by itself.
        _, st = await w.api("GET", "/session/broken/status")
        assert st["data"]["status"] == "failed" and st["data"]["error"]
        still = await w.session("fine")
        assert still["pid"] == fine["pid"] and still["status"] == "connected" and still["restarts"] == 0


async def test_garbage_on_the_router_is_dropped(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        a = await w.create_linked("steady", "6285000001")
        endpoint = f"ipc://{w.storage.resolve() / 'run' / 'supervisor.sock'}"
        ctx = zmq.asyncio.Context()
        # One stranger throws garbage and plausible frames; an impostor claims the session's identity.
        stranger = ctx.socket(zmq.DEALER)
        impostor = ctx.socket(zmq.DEALER)
        impostor.setsockopt(zmq.IDENTITY, f"steady:{a['restarts'] + 1}".encode())
        for sock in (stranger, impostor):
            sock.setsockopt(zmq.LINGER, 2000)  # closing must not discard what is still queued
            sock.connect(endpoint)
        frames = [
            b"\xc1\xff\x00garbage",
            b"",
            b"\x92\x01\x02",
            json.dumps({"v": 1}).encode(),
            msgpack.packb({"v": 99, "kind": "req", "id": 1, "op": "message", "body": {}}),
            msgpack.packb({"v": 1, "kind": "nope", "op": "x", "body": {}}),
            msgpack.packb({"v": 1, "kind": "event", "op": "connected", "body": {"phone": "1"}}),
        ]
        for sock in (stranger, impostor):
            for junk in frames:
                await sock.send(junk)
            await sock.send_multipart([b"a", b"b", b"c"])
        for sock in (stranger, impostor):
            sock.close()
        ctx.term()

        async def dropped() -> bool:
            return "dropped a frame" in w.log() and "unknown identity" in w.log()

        await wait_for(dropped, what="the worker to log dropped frames")
        status, health = await w.api("GET", "/health")
        assert status == 200 and health["status"] == "healthy"
        s = await w.session("steady")
        assert s["pid"] == a["pid"] and s["status"] == "connected" and s["phoneNumber"] == "6285000001"
        status, _ = await w.api("POST", "/session/steady/send", json={"to": "6289999", "text": "still here"})
        assert status == 200


async def test_sessions_come_back_after_worker_restart(tmp_path: Path) -> None:
    storage = tmp_path / "w"
    async with running_worker(storage) as w:
        await w.create_linked("persist", "6286000001")
        before = await w.session("persist")
        children = w.child_pids()
        assert await w.stop(signal.SIGTERM) == 0
        assert not any(pid_alive(p) for p in children)  # graceful stop leaves nothing running
    async with running_worker(storage) as w2:
        again = await w2.wait_session("persist", lambda s: s["status"] == "connected", what="reconnected")
        assert again["qrCount"] == 0 and again["phoneNumber"] == "6286000001"
        assert again["pid"] != before["pid"]


async def test_phone_unlink_logs_out_without_restart_loop(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("unlinked", "6287000001")
        status, _ = await w.hub("POST", "/phones/6287000001/unlink")
        assert status == 200
        s = await w.wait_session("unlinked", lambda s: s["status"] == "logged_out" and s["pid"] is None)
        assert s["processState"] == "EXITED" and s["restarts"] == 0
        # A restart brings a new QR for a new link.
        status, _ = await w.api("POST", "/session/unlinked/restart")
        assert status == 200
        await w.wait_session("unlinked", lambda s: s["status"] == "qr_ready")


async def test_admission_auth_and_validation(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w", MAX_SESSIONS="1") as w:
        assert (await w.api("POST", "/session/create", json={"sessionId": "one"}))[0] == 200
        status, body = await w.api("POST", "/session/create", json={"sessionId": "two"})
        assert status == 503 and body == {"success": False, "error": body["error"], "code": "CAPACITY"}
        # Creating an existing session is idempotent, even at capacity.
        assert (await w.api("POST", "/session/create", json={"sessionId": "one"}))[0] == 200
        status, body = await w.api("POST", "/session/create", json={"sessionId": "../etc"})
        assert status == 400 and body["code"] == "INVALID_SESSION_ID"
        status, body = await w.api("GET", "/session/nobody/status")
        assert status == 404 and body["code"] == "SESSION_NOT_FOUND"
        status, body = await w.api("POST", "/session/one/send", json={"to": "6280000", "text": "x"})
        assert status == 409 and body["code"] == "SESSION_NOT_CONNECTED"
        status, body = await w.api("POST", "/session/one/send", json={"to": "not-a-phone", "text": "x"})
        assert status == 400 and body["code"] == "INVALID_TARGET"
        status, body = await w.api("POST", "/session/one/send", data="to=1", headers={"Content-Type": "text/plain"})
        assert status == 415
        assert w.http is not None
        async with w.http.get(f"{w.url}/sessions", headers={"X-Worker-Token": "wrong"}) as resp:
            assert resp.status == 403 and (await resp.json())["code"] == "FORBIDDEN"
        async with w.http.get(f"{w.url}/sessions", headers={"X-Worker-Token": ""}) as resp:
            assert resp.status == 403
        import aiohttp

        async with aiohttp.ClientSession() as anon:
            async with anon.get(f"{w.url}/sessions") as resp:
                assert resp.status == 401 and (await resp.json())["code"] == "UNAUTHORIZED"
            async with anon.get(f"{w.url}/health") as resp:
                assert resp.status == 200


async def test_delete_logs_out_stops_and_removes_state(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        s = await w.create_linked("gone", "6288000001")
        assert (w.storage / "sessions" / "gone").is_dir()
        status, body = await w.api("DELETE", "/session/gone")
        assert status == 200 and body["data"]["deleted"] is True
        assert not pid_alive(s["pid"])
        assert not (w.storage / "sessions" / "gone").exists()
        assert (await w.api("GET", "/session/gone/status"))[0] == 404
        _, devices = await w.hub("GET", "/devices")
        assert all(d.get("phone") != "6288000001" for d in devices["devices"])


async def test_ps_shows_the_session_processes(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        a = await w.create_linked("ps-a", "6289000001")
        await w.wait_session("ps-a", lambda s: s["memory"]["uss"] and s["processState"] == "RUNNING")
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "supervisor.cli", "ps", "--url", w.url, "--token", TOKEN],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        header, *rows = out.stdout.splitlines()
        assert header.split()[:4] == ["SESSION", "STATUS", "PROC", "PID"]
        [row] = [r for r in rows if r.startswith("ps-a ")]
        assert row.split()[:4] == ["ps-a", "connected", "RUNNING", str(a["pid"])]
        # The process is findable by its title.
        assert psutil.Process(a["pid"]).cmdline()[0].startswith("wa-session ps-a")


async def test_hub_is_supervised_and_sessions_reconnect_after_it_crashes(tmp_path: Path) -> None:
    async with running_worker(tmp_path / "w") as w:
        await w.create_linked("hubbed", "6281200001")
        session_pid = (await w.session("hubbed"))["pid"]
        [hub] = [p for p, cmd in w.child_cmdlines().items() if cmd.startswith("wa-sim-hub")]
        killed_at = time.time()
        os.kill(hub, signal.SIGKILL)

        async def hub_back() -> int | None:
            pids = [p for p, cmd in w.child_cmdlines().items() if p != hub and "wa-sim-hub" in cmd]
            return pids[0] if pids else None

        await wait_for(hub_back, what="a new hub process")
        # The session process outlives the hub's crash, notices it, and reconnects with its stored credentials.
        s = await w.wait_session(
            "hubbed",
            lambda s: s["status"] == "connected" and time.time() - s["secondsInStatus"] > killed_at,
            timeout=30,
            what="connected again since the hub was killed",
        )
        assert s["pid"] == session_pid and s["qrCount"] == 1
        status, _ = await w.api("POST", "/session/hubbed/send", json={"to": "6289999", "text": "after hub crash"})
        assert status == 200


async def test_standalone_hub_shared_through_sim_hub(tmp_path: Path) -> None:
    async with standalone_hub(tmp_path) as hub_env, running_worker(tmp_path / "w", **hub_env) as w:
        assert not [p for p, cmd in w.child_cmdlines().items() if "wa-sim-hub" in cmd]
        await w.create_linked("shared", "6281300001")


async def test_unscanned_qr_rounds_end_in_rest_until_asked(tmp_path: Path) -> None:
    env = {"SIM_QR_TTL": "0.3", "SIM_QR_MAX": "2", "QR_CYCLES": "2"}
    async with running_worker(tmp_path / "w", **env) as w:
        status, _ = await w.api("POST", "/session/create", json={"sessionId": "nobody-scans"})
        assert status == 200
        # Two rounds of two codes each, then the session rests: no process, no more codes.
        rested = await w.wait_session(
            "nobody-scans",
            lambda s: s["processState"] == "EXITED" and s["lastError"] == "qr_timeout" and s["qrCount"] == 4,
            what="resting after two rounds",
        )
        assert rested["status"] == "disconnected" and rested["pid"] is None and rested["restarts"] == 0
        # Asking for the QR starts a new round and answers with a fresh code.
        status, qr = await w.api("GET", "/session/nobody-scans/qr")
        assert status == 200 and qr["data"]["qr"] and qr["data"]["status"] == "qr_ready", qr
        status, _ = await w.hub("POST", "/phones/6281400001/scan", json={"qr": qr["data"]["qr"]})
        assert status == 200
        await w.wait_session("nobody-scans", lambda s: s["status"] == "connected")


def test_the_supervisor_settles_its_heap_after_start_up() -> None:
    # In a process of its own: the settings are process-wide and this one runs the other tests.
    code = (
        "import gc; from supervisor.heap import YOUNG_THRESHOLD, settle_heap; before = gc.get_threshold(); "
        "settle_heap(); after = gc.get_threshold(); "
        "assert gc.get_freeze_count() > 0, 'nothing frozen'; "
        "assert after == (YOUNG_THRESHOLD, *before[1:]), after"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_a_restarted_worker_knows_every_stored_session_from_its_first_answer(tmp_path: Path) -> None:
    # A backend reads 404 as "the session is gone" and may create it on another worker: a stored
    # session must be known (listed, and sends answered "retry") from the API's first answer on.
    async with standalone_hub(tmp_path) as hub_env:
        env = {**hub_env, "START_STAGGER": "1", "RATE_LIMIT_SEND_PER_SESSION": "0"}
        ids = [f"keep{n}" for n in range(4)]
        first = Worker(tmp_path / "w", env)
        await first.start()
        try:
            for n, sid in enumerate(ids):
                await first.create_linked(sid, f"62860000{n}")
            for sid in ids:  # under load when it dies
                assert (await first.api("POST", f"/session/{sid}/send", json={"to": "6286999", "text": "x"}))[0] == 200
        finally:
            children = first.child_pids()
            await first.stop(signal.SIGKILL)
            await kill_tree(children)

        second = Worker(tmp_path / "w", env)
        await second.start()  # returns at /health's first 200: the API is open
        try:
            status, body = await second.api("GET", "/sessions")
            assert status == 200
            listed = {s["sessionId"]: s["status"] for s in body["data"]["sessions"]}
            assert set(listed) == set(ids)
            assert set(listed.values()) <= {"initializing", "connected"}, listed
            answers: dict[str, list[int]] = {sid: [] for sid in ids}
            refusals: list[dict[str, object]] = []

            async def every_session_sends() -> bool:
                assert second.http is not None
                for sid in ids:
                    if 200 in answers[sid]:
                        continue
                    url = f"{second.url}/session/{sid}/send"
                    async with second.http.post(url, json={"to": "6286999", "text": "again"}) as resp:
                        answers[sid].append(resp.status)
                        if resp.status != 200:
                            refusals.append({**(await resp.json()), "retryAfter": resp.headers.get("Retry-After")})
                return all(200 in a for a in answers.values())

            await wait_for(every_session_sends, timeout=60, what="every stored session sending again")
            assert not any(404 in a for a in answers.values()), answers
            assert refusals, "the later sessions were still starting when the API opened"
            for refusal in refusals:
                assert refusal["code"] == "SESSION_NOT_CONNECTED" and refusal["retryAfter"] == "2", refusal
        finally:
            children = second.child_pids()
            await second.stop()
            await kill_tree(children)


@pytest.mark.parametrize("spawner", ["zygote", "exec"])
async def test_no_child_process_sees_the_supervisors_secrets(tmp_path: Path, spawner: str) -> None:
    secrets = {
        "WORKER_AUTH_TOKEN": TOKEN,
        "JWT_SECRET": "jwt-secret-" + "j" * 32,
        "ENCRYPTION_KEY": "encryption-key-" + "e" * 32,
    }
    async with running_worker(tmp_path / "w", SPAWNER=spawner, **secrets) as w:
        session = await w.create_linked("plain", "6289100001")
        children = w.child_cmdlines()
        kinds = {"session": session["pid"]}
        for pid, cmdline in children.items():
            if "wa-sim-hub" in cmdline or "session_proc.sim" in cmdline:
                kinds["hub"] = pid
            if "wa-zygote" in cmdline or "session_proc.zygote" in cmdline:
                kinds["zygote"] = pid
        assert {"session", "hub"} <= set(kinds) and ("zygote" in kinds) == (spawner == "zygote"), children
        for kind, pid in kinds.items():
            environ = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
            names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
            assert not names & set(secrets), (kind, names & set(secrets))
            for value in secrets.values():
                assert value.encode() not in environ, kind
            assert "PATH" in names, kind  # what it needs to run is still there


async def test_what_the_worker_and_its_children_write_is_theirs_alone(tmp_path: Path) -> None:
    root = tmp_path / "w"
    async with running_worker(root) as w:
        await w.create_linked("private", "6289200001")
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        written = [root / "worker.db", *(root / "sessions" / "private").iterdir()]  # the supervisor's; a child's
        assert len(written) >= 2
        for path in written:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_a_socket_directory_someone_else_prepared_is_refused(tmp_path: Path) -> None:
    # A STORAGE_DIR too deep for an ipc:// path puts the sockets under /tmp, where another local
    # user could have made the directory first (here: a link to a directory of theirs).
    storage = tmp_path / ("deep-" * 20)
    sockets = socket_dir(load({"STORAGE_DIR": str(storage)}))
    assert str(sockets).startswith(tempfile.gettempdir())
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    sockets.symlink_to(theirs)
    try:
        env = clean_env(STORAGE_DIR=str(storage), WORKER_AUTH_TOKEN=TOKEN, PORT=str(free_port()), WA_ENGINE="sim")
        out = subprocess.run(
            [sys.executable, "-m", "supervisor.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 1, out.stderr
        assert "is not a plain directory (a link?)" in out.stderr
        assert not list(theirs.iterdir())  # nothing of ours went there
    finally:
        sockets.unlink()
