"""The pre-warmed spawner: imports a session process's modules once, then forks session processes.

``python -m session_proc.zygote`` is started by the supervisor and speaks JSON
lines on stdin/stdout (see supervisor/supervision/spawner.py): it answers each ``spawn``
request with the forked child's pid and reports every child it reaps as
``{"exit": pid, "rc": rc}`` (negative rc: killed by that signal). It exits
when its stdin closes or its parent (the supervisor) dies.

Only pure-Python modules are preloaded. The neonize engine loads a Go runtime,
and a forked Go runtime is broken: of neonize, the zygote preloads only its
generated protobuf modules and event types, without running the package's
``__init__`` (session_proc/neonize/loader.py, ``preload_protocols``); the child
loads the rest, and with it the Go library, after the fork. ``preload()``
refuses to go on if the Go library is mapped or a thread runs. The zygote
starts no threads, no event loop and no ZeroMQ context, so every child creates
its own.

Two knobs for measuring what each step saves (bench/): ``WA_ZYGOTE_GC_FREEZE=0``
skips ``gc.freeze()``, ``WA_ZYGOTE_PRELOAD_NEONIZE=0`` skips neonize's protocols.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import selectors
import signal
import sys
import threading
from typing import Any

from session_proc.neonize import loader as neonize_loader
from session_proc.proctitle import die_with_parent, set_title

# What a session process imports anyway, so each child need not (pure Python or plain C extensions).
PRELOAD = (
    "asyncio",
    "json",
    "zmq",
    "zmq.asyncio",
    "msgpack",
    "session_proc.main",
    "session_proc.sim.engine",
)
# neonize's third-party and standard-library dependencies, where installed (what
# ``import neonize.client`` pulls in); neonize's own modules: see preload().
PRELOAD_OPTIONAL = (
    "google.protobuf.message",
    "google.protobuf.descriptor_pool",
    "google.protobuf.internal.builder",
    "google.protobuf.symbol_database",
    "google.protobuf.reflection",
    "google.protobuf.message_factory",
    "concurrent.futures.process",
    "shlex",
    "PIL.ImageSequence",
    "requests",
    "httpx",
    "PIL.Image",
    "phonenumbers",
    "bs4",
    "soupsieve",
    "linkpreview",
    "segno",
    "magic",
    "rich.console",
    "pygments",
    "tqdm",
    "click",
    "certifi",
    "charset_normalizer",
    "idna",
    "urllib3",
    "typing_extensions",
)
SESSION_MODULE = "session_proc"


def preload(*, freeze: bool = True, neonize: bool = True) -> list[str]:
    """Import the modules children share; ``gc.freeze()`` them so no collection dirties their pages.

    With ``neonize``, also neonize's protobuf modules and event types (never its Go library).
    """
    loaded = []
    for name in PRELOAD:
        importlib.import_module(name)
        loaded.append(name)
    for name in PRELOAD_OPTIONAL:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # optional: missing or broken means "not shared", nothing more
            pass
    if neonize:
        try:
            loaded += neonize_loader.preload_protocols()
        except Exception as exc:  # not shared then: each neonize child imports them itself, as before
            print(f"wa-zygote: neonize's protocols not preloaded: {exc}", file=sys.stderr, flush=True)
    check_fork_safe()
    gc.collect()
    if freeze:
        gc.freeze()
    return loaded


def check_fork_safe() -> None:
    """Raise unless this process may fork session processes: no Go runtime loaded, no thread started."""
    if neonize_loader.go_library_mapped() or "neonize.client" in sys.modules or "neonize._binder" in sys.modules:
        raise RuntimeError("neonize's Go library must never be loaded before the fork (a forked Go runtime breaks)")
    if threading.active_count() != 1:
        names = ", ".join(t.name for t in threading.enumerate())
        raise RuntimeError(f"the zygote must start no threads before forking (running: {names})")


def _write(msg: dict[str, Any]) -> None:
    os.write(1, (json.dumps(msg) + "\n").encode())


def _become_environment(env: dict[str, str]) -> None:
    """Make ``env`` this process's environment, keeping what it shares with the zygote's in place.

    Not clear() and update(): unsetenv shifts the original environment block in place, and that
    block (not os.environ) is what neonize's Go library reads when the child loads it; a variable
    the zygote started with and the child keeps must stay in it (engines.START_ENV).
    """
    for name in [n for n in os.environ if n not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _run_child(argv: list[str], env: dict[str, str], wakeup_r: int, wakeup_w: int, zygote_pid: int) -> None:
    """In the forked child: become a session process and never return."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.close(wakeup_r)
        os.close(wakeup_w)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)  # the zygote's control pipe is not the child's business
        os.dup2(devnull, 1)
        os.close(devnull)
        _become_environment(env)
        # Die with the zygote (which dies with the supervisor); session_proc.main sets it again.
        die_with_parent(signal.SIGTERM)
        if os.getppid() != zygote_pid:
            os._exit(3)
        if argv[1:3] != ["-m", SESSION_MODULE]:
            raise ValueError("the zygote forks session processes only")
        sys.argv = [SESSION_MODULE, *argv[3:]]
        from session_proc.main import main

        code = main(argv[3:])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # whatever happens, a child must never return into the zygote's loop
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with_flush()
        os._exit(code)


def with_flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # stdout may be closed
            pass


def serve() -> int:
    """The zygote's loop: fork on request, reap and report; until stdin closes."""
    parent = os.getppid()
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:  # the supervisor died before the death signal was armed
        return 3
    set_title("wa-zygote")
    freeze = os.environ.get("WA_ZYGOTE_GC_FREEZE", "1") != "0"
    preload(freeze=freeze, neonize=os.environ.get("WA_ZYGOTE_PRELOAD_NEONIZE", "1") != "0")
    me = os.getpid()
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so SIGCHLD writes to the wakeup fd
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "control")
    sel.register(wakeup_r, selectors.EVENT_READ, "wakeup")
    children: set[int] = set()
    buf = b""
    _write({"ready": True, "pid": me})
    try:
        while True:
            for key, _ in sel.select():
                if key.data == "wakeup":
                    try:
                        os.read(wakeup_r, 4096)
                    except BlockingIOError:
                        pass
                    _reap(children)
                    continue
                chunk = os.read(0, 1 << 16)
                if not chunk:
                    return 0  # the supervisor closed our stdin: done
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    _handle(line, children, wakeup_r, wakeup_w, me)
            _reap(children)
    finally:
        # Children die with us (their parent-death signal); nothing to wait for.
        sel.close()


def _handle(line: bytes, children: set[int], wakeup_r: int, wakeup_w: int, me: int) -> None:
    try:
        req = json.loads(line)
        rid = req["id"]
    except (ValueError, KeyError, TypeError):
        return
    if req.get("op") != "spawn":
        _write({"id": rid, "error": f"unknown op {req.get('op')!r}"})
        return
    try:
        pid = os.fork()
    except OSError as exc:
        _write({"id": rid, "error": str(exc)})
        return
    if pid == 0:
        _run_child(list(req["argv"]), dict(req["env"]), wakeup_r, wakeup_w, me)
    children.add(pid)
    # Answered before any reaping: the supervisor opens a pidfd on it while it is surely ours.
    _write({"id": rid, "pid": pid})


def _reap(children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _write({"exit": pid, "rc": os.waitstatus_to_exitcode(status)})


def main() -> int:
    # The only argument is --title-room=...: padding whose memory children's process titles reuse.
    try:
        return serve()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
