"""The worker's lifecycle: resources start in a fixed order, close in the reverse one, and a close
that fails neither skips the others nor goes unreported.

The app runs in this process (real store, zygote, simulated network, ROUTER socket); only the
start and close methods are wrapped, to record their order and to make one close fail.
"""

from __future__ import annotations

import fcntl
import inspect
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from harness import TOKEN, free_port, pid_alive

from common.closing import CloseFailed, Closing
from supervisor import app as app_module
from supervisor.api.keys import BACKEND_LINK, REGISTRY, STORAGE, WEBHOOKS
from supervisor.app import ROUTER, SIM_HUB, STORE, ZYGOTE, build_app
from supervisor.config import Settings
from supervisor.database.store import Store
from supervisor.events.backend import BackendLink
from supervisor.events.log import EventLog
from supervisor.events.webhooks import Webhooks
from supervisor.sessions import SessionRegistry
from supervisor.storage.service import SessionStorage
from supervisor.supervision.hub_child import SimHubChild
from supervisor.supervision.spawner import ZygoteSpawner
from transport.channel import PeerGone, RouterChannel

STARTS: list[tuple[str, type, str]] = [
    ("event log", EventLog, "start"),
    ("zygote", ZygoteSpawner, "start"),
    ("hub", SimHubChild, "start"),
    ("router", RouterChannel, "bind"),
    ("storage", SessionStorage, "start"),
    ("registry", SessionRegistry, "start"),
    ("webhooks", Webhooks, "start"),
    ("backend", BackendLink, "start"),
]
CLOSES: list[tuple[str, type, str]] = [
    ("store", Store, "close"),
    ("event log", EventLog, "close"),
    ("http", aiohttp.ClientSession, "close"),
    ("zygote", ZygoteSpawner, "close"),
    ("hub", SimHubChild, "close"),
    ("router", RouterChannel, "close"),
    ("storage", SessionStorage, "close"),
    ("registry", SessionRegistry, "_shutdown_once"),  # shutdown() is idempotent: the real work runs once
    ("webhooks", Webhooks, "close"),
    ("backend", BackendLink, "close"),
]
START_ORDER = [
    "store",
    "event log",
    "zygote",
    "hub",
    "router",
    "storage",
    "heap settled",
    "registry",
    "webhooks",
    "backend",
]
CLOSE_ORDER = [
    "registry",
    "backend",
    "webhooks",
    "storage",
    "router",
    "hub",
    "zygote",
    "http",  # the webhooks' own client
    "http",
    "event log",
    "store",
]


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=free_port(),
        worker_id="lifecycle-worker",
        storage_dir=tmp_path,
        database_path=tmp_path / "worker.db",
        engine="sim",
        sim_port=free_port(),
        spawner="zygote",
        # Nobody listens there: the link keeps trying to register in the background, as with a backend down.
        backend_url=f"http://127.0.0.1:{free_port()}",
        log_format="json",
    )


def _record(
    monkeypatch: pytest.MonkeyPatch, order: list[str], name: str, cls: type, method: str, *, fail: bool = False
) -> None:
    """Wrap ``cls.method`` to note ``name`` in ``order`` when called (and fail instead, with ``fail``)."""
    original = getattr(cls, method)
    if inspect.iscoroutinefunction(original):

        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            order.append(name)
            if fail:
                raise RuntimeError(f"{name} would not close")
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, wrapper)
    else:

        def sync_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            order.append(name)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, sync_wrapper)


def _lock_is_free(storage_dir: Path) -> bool:
    with open(storage_dir / "run" / "worker.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


@pytest.mark.parametrize("failing", ["webhooks", "store", "registry"])
async def test_one_failing_close_does_not_skip_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failing: str
) -> None:
    started: list[str] = []
    closed: list[str] = []
    originals: dict[str, Callable[..., Awaitable[Any]]] = {name: getattr(cls, m) for name, cls, m in CLOSES}
    for name, cls, method in STARTS:
        _record(monkeypatch, started, name, cls, method)
    for name, cls, method in CLOSES:
        _record(monkeypatch, closed, name, cls, method, fail=name == failing)
    store_open = Store.open

    async def open_store(path: Path) -> Store:
        started.append("store")
        return await store_open(path)

    monkeypatch.setattr(Store, "open", open_store)
    monkeypatch.setattr(app_module, "settle_heap", lambda: started.append("heap settled"))

    app = build_app(_settings(tmp_path), TOKEN)
    runner = web.AppRunner(app)
    await runner.setup()
    assert started == START_ORDER
    resources = {
        "store": app[STORE],
        "registry": app[REGISTRY],
        "webhooks": app[WEBHOOKS],
        "storage": app[STORAGE],
        "backend": app[BACKEND_LINK],
    }
    zygote_pid, hub_pid, router = app[ZYGOTE].pid, app[SIM_HUB].pid, app[ROUTER]
    assert zygote_pid is not None and hub_pid is not None
    assert not _lock_is_free(tmp_path)

    caplog.set_level(logging.ERROR)
    with pytest.raises(CloseFailed) as raised:
        await runner.cleanup()

    # Every close ran, in the reverse of the start-up order, the failing one included.
    assert closed == CLOSE_ORDER
    assert raised.value.failed == ["sessions" if failing == "registry" else failing]
    assert isinstance(raised.value.__cause__, RuntimeError)
    told = [r for r in caplog.records if r.getMessage().startswith("closing ")]
    assert len(told) == 1, [r.getMessage() for r in told]
    assert told[0].exc_info is not None and getattr(told[0], "workerId", None) == "lifecycle-worker"
    # ...and what they close is closed: the lock, the processes, the socket.
    assert _lock_is_free(tmp_path)
    assert not pid_alive(zygote_pid) and not pid_alive(hub_pid)
    with pytest.raises(PeerGone, match="channel closed"):
        router.emit(b"anyone:1", "stop")

    # The failed close did nothing: finish it, so the test leaves nothing running.
    resource = resources[failing]
    await originals[failing](resource)


async def test_a_resource_that_fails_to_start_leaves_the_ones_before_it_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    for name, cls, method in STARTS:
        _record(monkeypatch, [], name, cls, method, fail=name == "webhooks")
    for name, cls, method in CLOSES:
        _record(monkeypatch, closed, name, cls, method)
    app = build_app(_settings(tmp_path), TOKEN)
    runner = web.AppRunner(app)
    with pytest.raises(RuntimeError, match="webhooks"):
        await runner.setup()
    zygote_pid, hub_pid = app[ZYGOTE].pid, app[SIM_HUB].pid
    assert zygote_pid is not None and hub_pid is not None

    await runner.cleanup()  # what drain.serve does after a failed start

    # The failed one closes what it had begun; the backend link never started.
    assert closed == ["webhooks", "registry", *CLOSE_ORDER[3:]]
    assert _lock_is_free(tmp_path)
    assert not pid_alive(zygote_pid) and not pid_alive(hub_pid)


def test_closing_runs_every_step_and_raises_the_first_error(caplog: pytest.LogCaptureFixture) -> None:
    closing = Closing(logging.getLogger("test"), extra={"workerId": "w"})
    ran: list[str] = []
    first = ValueError("first")
    for name, error in (("a", first), ("b", None), ("c", KeyError("second"))):
        with closing.step(name, extra={"sessionId": name}):
            ran.append(name)
            if error is not None:
                raise error
    assert ran == ["a", "b", "c"]
    assert closing.failed == ["a", "c"]
    with pytest.raises(CloseFailed) as raised:
        closing.raise_if_failed()
    assert raised.value.__cause__ is first
    assert [(r.getMessage(), getattr(r, "sessionId", None)) for r in caplog.records] == [
        ("closing a failed; closing the rest", "a"),
        ("closing c failed; closing the rest", "c"),
    ]
