"""Engine lookup by name; each engine's module is imported only when chosen.

The neonize engine loads a Go runtime, which must never be loaded before a
fork: importing it lazily here keeps it out of every process that does not run it.
"""

from __future__ import annotations

import importlib
import os

from session_proc.engine import Engine, EngineError

# Variables native code reads when it loads. neonize's Go library takes its environment from the
# block the process was started with (a c-shared Go runtime copies it at load; os.environ set later
# never reaches it), so whoever starts a session process, or the zygote that forks them, puts these
# in the starting environment.
START_ENV: dict[str, str] = {
    # Read on every send by neonize's Go side: anything but "off" tags each 1:1 message as a bot's.
    "NEONIZE_BOT_TAG": "off",
}

_ENGINES = {
    "sim": ("session_proc.sim.engine", "SimEngine"),
    "neonize": ("session_proc.neonize.engine", "NeonizeEngine"),
    "fault": ("session_proc.sim.fault", "FaultEngine"),  # tests only: see faults_enabled
}
# The test-only variable that holds the fault engine's switches (session_proc/sim/fault.py).
FAULTS_ENV = "WA_TEST_FAULTS"


def faults_enabled() -> bool:
    """Whether this process runs under test faults: only then is the fault engine handed out.

    It then stands in for the sim engine, so a test worker (WA_ENGINE=sim) gets it for its sessions
    by setting the variable alone; without the variable, ``fault`` is refused as an unknown engine.
    """
    return bool(os.environ.get(FAULTS_ENV))


def engine_class(name: str) -> type[Engine]:
    """The Engine subclass registered under ``name``."""
    if name == "fault" and not faults_enabled():
        raise EngineError("UNKNOWN_ENGINE", f"the fault engine is for tests only and {FAULTS_ENV} is not set")
    if name == "sim" and faults_enabled():
        name = "fault"
    try:
        module_name, class_name = _ENGINES[name]
    except KeyError:
        known = ", ".join(n for n in _ENGINES if n != "fault")
        raise EngineError("UNKNOWN_ENGINE", f"unknown engine {name!r}; known: {known}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineError("ENGINE_UNAVAILABLE", f"the {name} engine cannot be loaded: {exc}") from None
    cls: type[Engine] = getattr(module, class_name)
    return cls
