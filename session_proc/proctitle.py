"""Making a child findable and mortal: process title and parent-death signal."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def set_title(title: str) -> None:
    """Show ``title`` in ps/top instead of the python command line.

    The title is written over the command line's own memory only, never over the environment's
    (SPT_NOENV): a Go library loaded later (neonize) reads its environment from that memory, and
    would find it blank. So a title longer than the command line is cut to its length.
    """
    os.environ.setdefault("SPT_NOENV", "1")  # read by setproctitle on its first call
    try:
        import setproctitle
    except ImportError:
        log.warning("setproctitle is not installed; process title stays the command line")
        return
    setproctitle.setproctitle(title)


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` when our parent dies (Linux only); True if set."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return False
    return True
