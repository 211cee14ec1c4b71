"""``wa-worker``: ``serve`` runs the worker, ``sim`` a standalone simulated network, ``ps`` shows session
processes, ``health`` checks the local worker's ``/health``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any, NoReturn

from supervisor import config, worker_token


def _settings() -> config.Settings:
    try:
        return config.load()
    except config.ConfigError as exc:
        print(f"wa-worker: bad configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(_args: argparse.Namespace) -> int:
    """Run the worker until SIGTERM/SIGINT."""
    from common import event_loop
    from common.closing import CloseFailed
    from supervisor import drain, logs
    from supervisor.app import StartupError, build_app, resolve_token

    settings = _settings()
    # What the worker and its children write is theirs alone: a file made 0644 would be readable by any
    # local user wherever a directory above it is not private.
    os.umask(0o077)
    token = resolve_token(settings)
    try:
        logs.configure(settings, token=token)
    except OSError as exc:
        print(f"wa-worker: bad configuration: LOG_FILE_PATH={settings.log_file_path}: {exc.strerror}", file=sys.stderr)
        return 2
    app = build_app(settings, token)
    try:
        # Our own runner, not web.run_app: the drain needs the second SIGTERM and a deadline (supervisor/drain.py).
        event_loop.run(drain.serve(app, settings))
    except (StartupError, drain.ListenError) as exc:
        print(f"wa-worker: cannot start: {exc}", file=sys.stderr)
        return 1
    except CloseFailed as exc:
        print(f"wa-worker: stopped, but {exc}", file=sys.stderr)
        return 1
    return 0


def sim(_args: argparse.Namespace) -> NoReturn:
    """Run a standalone simulated WhatsApp network (hub) that several workers can share."""
    settings = _settings()
    endpoint = settings.sim_hub or "tcp://127.0.0.1:5599"
    argv = [
        sys.executable,
        "-m",
        "session_proc.sim",
        "--zmq",
        endpoint,
        "--http-host",
        os.environ.get("SIM_HOST", "127.0.0.1"),
        "--http-port",
        str(settings.sim_port),
        "--data-dir",
        str(settings.storage_dir / "sim-hub"),
        "--qr-ttl",
        str(settings.sim_qr_ttl),
        "--qr-max",
        str(settings.sim_qr_max),
    ]
    # Exec, not import: the supervisor side never imports the session side.
    os.execv(sys.executable, argv)


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / (1024 * 1024):.1f}M"


def _fmt_secs(s: float | None) -> str:
    if not s:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_ps(sessions: list[dict[str, Any]]) -> str:
    """The operator's table of session processes."""
    header = ("SESSION", "STATUS", "PROC", "PID", "RESTARTS", "UPTIME", "CPU%", "USS", "RSS", "LAST EXIT")
    rows = [header]
    for s in sessions:
        last_exit = s.get("lastExit") or {}
        cpu = s.get("cpuPercent")
        rows.append(
            (
                str(s["sessionId"]),
                str(s["status"]),
                str(s.get("processState", "-")),
                str(s.get("pid") or "-"),
                str(s.get("restarts", 0)),
                _fmt_secs(s.get("uptime")),
                "-" if cpu is None else f"{cpu:.1f}",
                _fmt_bytes((s.get("memory") or {}).get("uss")),
                _fmt_bytes((s.get("memory") or {}).get("rss")),
                str(last_exit.get("reason") or "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def ps(args: argparse.Namespace) -> int:
    """Print the running worker's session processes."""
    settings = _settings()
    url = args.url or f"http://127.0.0.1:{settings.port}"
    token = args.token or settings.worker_auth_token or worker_token.read_stored(settings.storage_dir)
    if not token:
        print("wa-worker ps: no token: set WORKER_AUTH_TOKEN or STORAGE_DIR of the worker", file=sys.stderr)
        return 2
    req = urllib.request.Request(f"{url}/sessions", headers={"X-Worker-Token": token})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            payload = json.load(resp)
    except urllib.error.HTTPError as exc:
        print(f"wa-worker ps: {url} answered {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"wa-worker ps: cannot reach the worker at {url}: {exc}", file=sys.stderr)
        return 1
    sessions = payload["data"]["sessions"]
    if args.json:
        print(json.dumps(sessions, indent=2))
    else:
        print(format_ps(sessions))
    return 0


def health(args: argparse.Namespace) -> int:
    """Exit 0 when the local worker's /health answers 200 (the container's HEALTHCHECK; no curl in the image)."""
    port = os.environ.get("PORT") or "8001"
    url = args.url or f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            status = json.load(resp).get("status")
    except urllib.error.HTTPError as exc:
        print(f"wa-worker health: {url} answered {exc.code}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"wa-worker health: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    print(f"wa-worker health: {status}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wa-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the worker (default)").set_defaults(func=serve)
    sub.add_parser("sim", help="run a standalone simulated WhatsApp network").set_defaults(func=sim)
    p_ps = sub.add_parser("ps", help="show the running worker's session processes")
    p_ps.add_argument("--url", help="the worker's base URL (default http://127.0.0.1:$PORT)")
    p_ps.add_argument("--token", help="API token (default WORKER_AUTH_TOKEN or the stored one)")
    p_ps.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_ps.set_defaults(func=ps)
    p_health = sub.add_parser("health", help="check the local worker's /health (exit 0 when healthy)")
    p_health.add_argument("--url", help="default http://127.0.0.1:$PORT/health")
    p_health.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    p_health.set_defaults(func=health)
    args = parser.parse_args(argv)
    func = getattr(args, "func", serve)
    result: int = func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
