"""Run the simulated WhatsApp network hub.

``python -m session_proc.sim --zmq ENDPOINT --http-port PORT --data-dir DIR``
binds the ZeroMQ ROUTER and the HTTP control API, then prints one JSON line,
``{"ready": true, "zmq": ..., "http": ...}``, to stdout. It exits on SIGTERM or
SIGINT, and when ``--parent-pid`` is given, when that parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import zmq
from aiohttp import web

from common import event_loop, logfmt
from common.tasks import cancel_and_wait
from session_proc.proctitle import die_with_parent, set_title
from session_proc.sim import ops
from session_proc.sim.hub import HEARTBEAT_INTERVAL, QR_TTL, Hub
from session_proc.sim.hub_http import create_app
from session_proc.sim.hub_store import HubStore

log = logging.getLogger("sim.hub")

PARENT_POLL_SECONDS = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The hub's command line."""
    parser = argparse.ArgumentParser(prog="python -m session_proc.sim", description=__doc__.splitlines()[0])
    parser.add_argument("--zmq", required=True, help="ZeroMQ endpoint to bind, e.g. tcp://127.0.0.1:0")
    parser.add_argument("--http-host", default="127.0.0.1", help="address of the HTTP control API")
    parser.add_argument("--http-port", type=int, default=0, help="port of the HTTP control API (0: any free)")
    parser.add_argument("--data-dir", required=True, type=Path, help="directory for hub.db")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process dies")
    parser.add_argument("--qr-ttl", type=float, default=QR_TTL, help="seconds each QR string stays valid")
    parser.add_argument(
        "--qr-max", type=int, default=0, help="QR codes per login attempt before qr_timeout (0: no limit)"
    )
    parser.add_argument(
        "--heartbeat", type=float, default=HEARTBEAT_INTERVAL, help="seconds between heartbeats to engines"
    )
    parser.add_argument(
        "--edit-window", type=float, default=ops.EDIT_WINDOW, help="seconds a message may be edited after it was sent"
    )
    args = parser.parse_args(argv)
    if args.qr_ttl <= 0 or args.heartbeat <= 0:
        parser.error("--qr-ttl and --heartbeat must be positive")
    return args


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    # PDEATHSIG fires when the parent *thread* exits and not at all under some
    # sandboxes, so a poll of our parent pid backs it up.
    while True:
        if os.getppid() != parent_pid:
            log.info("parent %d is gone: stopping", parent_pid)
            stop.set()
            return
        await asyncio.sleep(PARENT_POLL_SECONDS)


async def serve(args: argparse.Namespace) -> None:
    """Run the hub until a signal (or the parent's death) stops it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = HubStore(args.data_dir / "hub.db")
    hub = Hub(
        store,
        zmq_endpoint=args.zmq,
        qr_ttl=args.qr_ttl,
        qr_max=args.qr_max,
        heartbeat_interval=args.heartbeat,
        edit_window=args.edit_window,
    )
    runner = web.AppRunner(create_app(hub), access_log=None)
    watcher: asyncio.Task[None] | None = None
    try:
        endpoint = await hub.start()
        await runner.setup()
        site = web.TCPSite(runner, args.http_host, args.http_port)
        await site.start()
        port = runner.addresses[0][1]
        ready = {"ready": True, "zmq": endpoint, "http": f"http://{args.http_host}:{port}"}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        log.info("hub ready: zmq %s, http port %d, data %s", endpoint, port, args.data_dir)
        if args.parent_pid is not None:
            watcher = asyncio.create_task(_watch_parent(args.parent_pid, stop), name="parent-watch")
        await stop.wait()
        log.info("hub stopping")
    finally:
        await cancel_and_wait(watcher)
        await runner.cleanup()
        await hub.close()
        store.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the command line, run the hub, return the exit code."""
    args = parse_args(argv)
    # The worker's log format (JSON lines unless WA_LOG_FORMAT=text or a terminal), like the sessions'.
    fmt = os.environ.get("WA_LOG_FORMAT")
    logfmt.configure(os.environ.get("LOG_LEVEL", "INFO"), json_lines=None if fmt is None else fmt == "json")
    logfmt.set_context(component="sim-hub")
    set_title("wa-sim-hub")
    if args.parent_pid is not None:
        die_with_parent(signal.SIGTERM)
        if os.getppid() != args.parent_pid:
            log.info("parent %d died before the hub started", args.parent_pid)
            return 0
    try:
        event_loop.run(serve(args))
    except OSError as exc:  # the HTTP port is taken, the data dir is not writable, ...
        log.error("hub cannot start: %s", exc)
        return 2
    except zmq.ZMQError as exc:  # a bad or taken ZeroMQ endpoint
        log.error("hub cannot bind %s: %s", args.zmq, exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
