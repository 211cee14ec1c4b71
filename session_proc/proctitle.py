"""Making a child findable and mortal: process title and parent-death signal."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import sys

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def set_title(title: str) -> None:
    """Show ``title`` in ps/top instead of the python command line."""
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
