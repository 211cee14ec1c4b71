"""How child processes come to exist: exec'd, or forked by a pre-warmed zygote (``SPAWNER``, default zygote).

Both give the supervisor a :class:`ProcessHandle`: a pid, ``wait()`` for the
return code (negative: killed by that signal, as asyncio reports it) and
``send_signal``. The exec path is a thin wrapper over asyncio's subprocess.

The zygote (``python -m session_proc.zygote``) imports the session process's
pure-Python modules once and forks a session process per request, so a spawn
costs a fork instead of an interpreter start plus imports, and the imported
pages stay shared. It talks JSON lines over its stdin/stdout: requests
``{"op": "spawn", "id", "argv", "env"}``, answers ``{"id", "pid"}`` or
``{"id", "error"}``, and ``{"exit": pid, "rc": rc}`` whenever it reaped a child
(it is their parent, so it is the one that learns their exit codes). If the
zygote dies, its children die with it (their parent-death signal) and the
supervisor reports each of them killed, then starts a new zygote.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("supervisor.supervision.spawner")

# How long a new zygote may take to import everything and say hello.
ZYGOTE_START_TIMEOUT = 30.0
# Characters of command line the zygote is started with, for its children's process titles.
TITLE_ROOM = 80
# How long a fork request may take to be answered.
SPAWN_TIMEOUT = 10.0


class ProcessHandle(Protocol):
    """What the supervisor needs of a child process, however it was made."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdout(self) -> asyncio.StreamReader | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


class Spawner(Protocol):
    """Makes child processes from an argv and an environment."""

    async def spawn(self, argv: list[str], env: dict[str, str]) -> ProcessHandle: ...


class ExecHandle:
    """An exec'd child: asyncio's subprocess, which waits on it itself."""

    __slots__ = ("_proc",)

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    @property
    def stdout(self) -> asyncio.StreamReader | None:
        return self._proc.stdout

    async def wait(self) -> int:
        return await self._proc.wait()

    def send_signal(self, sig: int) -> None:
        self._proc.send_signal(sig)


async def exec_spawn(argv: list[str], env: dict[str, str], *, stdout: bool) -> ExecHandle:
    """Start ``argv`` as a new program (raises OSError when it cannot be started)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if stdout else asyncio.subprocess.DEVNULL,
        stderr=None,  # children log to our stderr: one stream for operators
        close_fds=True,
    )
    return ExecHandle(proc)


class ForkedHandle:
    """A child forked by the zygote; its exit code comes from the zygote's report."""

    __slots__ = ("_exited", "_pid", "_pidfd", "returncode")

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()
        # A pidfd names this process, not its number: a signal sent through it can never
        # reach a later process that reused the pid. The zygote has not reaped the child
        # when it answers the fork (its loop answers before it reaps), so the pid is still ours.
        self._pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                self._pidfd = os.pidfd_open(pid)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def stdout(self) -> asyncio.StreamReader | None:
        return None  # forked children write to the zygote's stderr, never to a pipe of ours

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            raise ProcessLookupError(self._pid)
        if self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, sig)
        else:
            os.kill(self._pid, sig)

    def exited(self, returncode: int) -> None:
        if self.returncode is None:
            self.returncode = returncode
            self._exited.set()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class ZygoteSpawner:
    """Runs the zygote process and forks session processes through it."""

    def __init__(self, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        self._cwd = cwd
        self._env = env
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._children: dict[int, ForkedHandle] = {}
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._lock = asyncio.Lock()
        self._closing = False
        self.restarts = -1  # the first start is not a restart

    @property
    def pid(self) -> int | None:
        """The zygote's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self) -> None:
        """Start the zygote (again) and wait for its hello."""
        async with self._lock:
            await self._start_locked()

    async def _start_locked(self) -> None:
        if self.pid is not None:
            return
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "session_proc.zygote",
            # Room in the command line for the children's titles ("wa-session <64-char id>"): a
            # title may only overwrite the command line's memory (session_proc/proctitle.py).
            "--title-room=" + "." * TITLE_ROOM,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            cwd=self._cwd,
            env=self._env,
            close_fds=True,
            limit=1 << 20,
        )
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(ZYGOTE_START_TIMEOUT):
                line = await self._proc.stdout.readline()
            hello = json.loads(line or b"{}")
        except (TimeoutError, ValueError):
            hello = {}
        if not hello.get("ready"):
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
            raise OSError(f"the zygote did not start (exit code {self._proc.returncode})")
        self.restarts += 1
        log.info("zygote started: pid %d (restarts %d)", self._proc.pid, self.restarts)
        self._reader = asyncio.create_task(self._read(self._proc), name="zygote-reader")

    async def spawn(self, argv: list[str], env: dict[str, str]) -> ForkedHandle:
        """Fork a session process running ``argv`` (``python -m session_proc ...``) with ``env``."""
        async with self._lock:
            await self._start_locked()  # a dead zygote is replaced on the next spawn at the latest
            proc = self._proc
            assert proc is not None and proc.stdin is not None
            self._next_id += 1
            rid = self._next_id
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending[rid] = fut
            line = json.dumps({"op": "spawn", "id": rid, "argv": argv, "env": env}) + "\n"
            try:
                proc.stdin.write(line.encode())
                await proc.stdin.drain()
            except (ConnectionError, RuntimeError) as exc:
                self._pending.pop(rid, None)
                raise OSError(f"the zygote is gone: {exc}") from exc
        try:
            async with asyncio.timeout(SPAWN_TIMEOUT):
                answer = await fut
        except TimeoutError:
            raise OSError("the zygote did not answer a fork request") from None
        finally:
            self._pending.pop(rid, None)
        if "error" in answer:
            raise OSError(f"the zygote could not fork: {answer['error']}")
        return self._children[int(answer["pid"])]

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            async for raw in proc.stdout:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    log.warning("zygote: dropped a malformed line")
                    continue
                if "exit" in msg:
                    handle = self._children.pop(int(msg["exit"]), None)
                    if handle is not None:
                        handle.exited(int(msg["rc"]))
                elif "id" in msg:
                    if "pid" in msg:
                        # Registered before the answer is seen, so an exit report that follows is never lost.
                        self._children[int(msg["pid"])] = ForkedHandle(int(msg["pid"]))
                    fut = self._pending.get(int(msg["id"]))
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        finally:
            await self._zygote_gone(proc)

    async def _zygote_gone(self, proc: asyncio.subprocess.Process) -> None:
        rc = await proc.wait()
        orphans = list(self._children.values())
        self._children.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result({"error": f"the zygote exited ({rc})"})
        for handle in orphans:
            # They die with the zygote (parent-death signal); make sure, then report them killed.
            with contextlib.suppress(ProcessLookupError, OSError):
                handle.send_signal(signal.SIGKILL)
            handle.exited(-signal.SIGKILL)
        if not self._closing:
            log.error("zygote pid %d exited (%s); %d children lost with it", proc.pid, rc, len(orphans))
            asyncio.get_running_loop().call_soon(self._restart_soon)

    def _restart_soon(self) -> None:
        if self._closing:
            return

        async def restart() -> None:
            try:
                await self.start()
            except OSError:
                log.exception("zygote: restart failed; retried on the next spawn")

        task = asyncio.ensure_future(restart())
        task.add_done_callback(lambda _t: None)

    async def close(self) -> None:
        """Stop the zygote (its remaining children die with it and are reported killed)."""
        self._closing = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()  # EOF: the zygote exits
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
