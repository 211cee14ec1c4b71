"""Engine lookup by name; each engine's module is imported only when chosen.

The neonize engine loads a Go runtime, which must never be loaded before a
fork: importing it lazily here keeps it out of every process that does not run it.
"""

from __future__ import annotations

import importlib

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
}


def engine_class(name: str) -> type[Engine]:
    """The Engine subclass registered under ``name``."""
    try:
        module_name, class_name = _ENGINES[name]
    except KeyError:
        raise EngineError("UNKNOWN_ENGINE", f"unknown engine {name!r}; known: {', '.join(_ENGINES)}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineError("ENGINE_UNAVAILABLE", f"the {name} engine cannot be loaded: {exc}") from None
    cls: type[Engine] = getattr(module, class_name)
    return cls
