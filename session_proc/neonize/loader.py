"""Loads neonize into a session process: bundled library only, our logging kept.

neonize would download its Go library from the internet when the wheel's copy
is missing, calls ``logging.basicConfig`` on import and, unless told otherwise,
tags every 1:1 message as sent by a bot. ``load()`` rules out the first two; the
bot tag is turned off by ``NEONIZE_BOT_TAG=off`` in the environment the process
starts with (session_proc/engines.py, ``START_ENV``), which ``load()`` checks.

``preload_protocols()`` is for the zygote: it imports neonize's generated
protobuf modules (pure Python over protobuf's upb extension, ~4.5 MiB per
process when each child imports them itself) without loading the Go library,
so forked children share them. ``load()`` finishes the import after the fork.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import platform
import sys
from pathlib import Path
from types import ModuleType

from session_proc.engine import EngineError
from session_proc.engines import START_ENV

log = logging.getLogger("session_proc.neonize")

# whatsmeow's own log lines arrive on these loggers (through neonize's log thread).
GO_LOGGERS = ("whatsmeow", "Whatsmeow", "neonize")

# What ``import neonize.client`` imports of neonize that is safe before a fork: the generated
# protobuf modules it uses (they import their own dependencies, as top-level ``wa*`` modules
# from the directory ``neonize.proto`` puts on sys.path) and the event types. Not
# ``neonize.utils`` (its ``log`` module starts a thread on import) nor ``neonize.client``
# (through ``neonize._binder`` it loads the Go library). tests/test_zygote_neonize.py checks that
# load() imports no protobuf module of neonize this list left out.
PRELOADABLE = (
    "neonize.proto.Neonize_pb2",
    "neonize.proto.waAICommon.WAWebProtobufsAICommon_pb2",
    "neonize.proto.waAICommonDeprecated.WAAICommonDeprecated_pb2",
    "neonize.proto.waCommon.WACommon_pb2",
    "neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2",
    "neonize.proto.waConsumerApplication.WAConsumerApplication_pb2",
    "neonize.proto.waE2E.WAWebProtobufsE2E_pb2",
    "neonize.proto.waMsgApplication.WAMsgApplication_pb2",
    "neonize.exc",
    "neonize.events",
)
# The neonize package as preload_protocols() left it: created but its __init__ not run yet.
_unexecuted_package: ModuleType | None = None


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


def preload_protocols() -> list[str]:
    """Import neonize's protobuf modules and event types without loading its Go library (for the zygote).

    ``neonize/__init__.py`` imports ``neonize.client``, which loads the Go library: so the
    package's module is created from its spec and registered in ``sys.modules`` without
    running its ``__init__`` (the import system's own two steps, create then execute, with
    the second left to ``load()`` after the fork). Its submodules then import under their
    usual names, as ``neonize.client`` will ask for them. Returns the modules imported;
    none when neonize is not installed.
    """
    global _unexecuted_package
    if "neonize" in sys.modules:
        raise RuntimeError("neonize is already imported: preload its protocols before anything imports it")
    spec = importlib.util.find_spec("neonize")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return []
    package = importlib.util.module_from_spec(spec)
    sys.modules["neonize"] = package
    _unexecuted_package = package
    try:
        for name in PRELOADABLE:
            importlib.import_module(name)
    except BaseException:
        # Leave the package as if never touched: load() then imports it the ordinary way.
        for name in [m for m in sys.modules if m == "neonize" or m.startswith("neonize.")]:
            del sys.modules[name]
        _unexecuted_package = None
        raise
    return list(PRELOADABLE)


def go_library_mapped() -> bool:
    """Whether neonize's Go library is mapped into this process (Linux: ``/proc/self/maps``)."""
    name = bundled_library_name()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any(line.rstrip().endswith(name) for line in maps)
    except FileNotFoundError:  # no procfs: neonize._binder is what loads the library
        return "neonize._binder" in sys.modules


def load() -> ModuleType:
    """Import ``neonize.client``, leaving the process's logging as configured."""
    global _unexecuted_package
    bundled_library()
    for name, value in START_ENV.items():
        # Setting it now would not reach the Go side (it reads the start environment): say so, once.
        if os.environ.get(name) != value:
            log.warning("%s is not %r in this process's start environment: the Go library will not see it", name, value)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        package = _unexecuted_package
        if package is not None and sys.modules.get("neonize") is package and package.__spec__ is not None:
            # Forked from a zygote that preloaded the protocols: run the package's __init__
            # now (it imports neonize.client, which loads the Go library), as an import would have.
            _unexecuted_package = None
            assert package.__spec__.loader is not None
            package.__spec__.loader.exec_module(package)
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
