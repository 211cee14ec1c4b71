"""Loads neonize into a session process: bundled library only, our logging kept.

neonize would download its Go library from the internet when the wheel's copy
is missing, calls ``logging.basicConfig`` on import and, unless told otherwise,
tags every 1:1 message as sent by a bot. ``load()`` rules all three out.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import platform
from pathlib import Path
from types import ModuleType

from session_proc.engine import EngineError

# whatsmeow's own log lines arrive on these loggers (through neonize's log thread).
GO_LOGGERS = ("whatsmeow", "Whatsmeow", "neonize")


def bundled_library_name() -> str:
    """The file name of the Go library in the neonize wheel for this machine (neonize's own scheme)."""
    system = platform.system().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine().lower())
    ext = {"windows": "dll", "darwin": "dylib"}.get(system, "so")
    return f"neonize-{system}-{arch}.{ext}"


def bundled_library() -> Path:
    """Where the wheel's Go library is; raises EngineError if neonize or its library is missing."""
    spec = importlib.util.find_spec("neonize")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("ENGINE_UNAVAILABLE", "neonize is not installed; run `make run` or pip install -e .")
    path = Path(next(iter(spec.submodule_search_locations))) / bundled_library_name()
    if not path.is_file():
        # Importing now would make neonize download the library at run time: refuse instead.
        raise EngineError(
            "ENGINE_UNAVAILABLE", f"neonize's bundled library {path.name} is missing; reinstall the neonize wheel"
        )
    return path


def load() -> ModuleType:
    """Import ``neonize.client`` with the bot tag off and the process's logging left as configured."""
    bundled_library()
    # Read by the Go side on every send: without it each 1:1 message carries a hidden bot tag.
    os.environ["NEONIZE_BOT_TAG"] = "off"
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        client = importlib.import_module("neonize.client")
    finally:
        # neonize's import calls logging.basicConfig(INFO): put our handlers and level back.
        root.handlers[:] = handlers
        root.setLevel(level)
    # neonize passes this logger's level to Go as whatsmeow's log level: INFO keeps the
    # DEBUG stanza dumps (which carry message content) out of our logs.
    logging.getLogger("neonize.utils.log").setLevel(logging.INFO)
    for name in GO_LOGGERS:
        logging.getLogger(name).propagate = True
    return client
