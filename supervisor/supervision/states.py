"""Process states of a supervised child, with supervisord's names and nothing else."""

from __future__ import annotations

import enum


class ProcState(enum.StrEnum):
    """Where a child process is in its lifecycle (supervisord's state names)."""

    STOPPED = "stopped"  # not running, nothing pending (never started, or stopped on request)
    STARTING = "starting"  # spawned, not yet READY plus `start_secs` up
    RUNNING = "running"  # READY and stayed up `start_secs`
    BACKOFF = "backoff"  # crashed; waiting out the backoff delay before the next start
    STOPPING = "stopping"  # a stop is in progress (request, then SIGTERM, then SIGKILL)
    EXITED = "exited"  # exited cleanly on its own (logout, replaced); not restarted
    FATAL = "fatal"  # restart intensity exceeded; stays down until started by a call
