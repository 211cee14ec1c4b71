"""The environment a child process starts with: what it needs to run, never the supervisor's secrets.

Session processes (and the zygote they are forked from, whose start environment they
inherit, and the simulated network's hub) are less trusted than the supervisor: a
session process runs a contact's media through native code. So they do not inherit
the supervisor's environment, where WORKER_AUTH_TOKEN, JWT_SECRET, ENCRYPTION_KEY, the
MinIO keys and the backend's address live; they get the variables below, and what
their starter sets explicitly (their options, their proxy).
"""

from __future__ import annotations

import os

# The platform: where programs, libraries, certificates and the locale are; egress proxies that
# Go's HTTP client (media downloads) honours.
PASSED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "LOG_LEVEL",
        "EVENT_LOOP",  # the worker's choice of event loop (common/event_loop.py)
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        # Go runtime tuning for neonize's library, set by an operator on purpose.
        "GODEBUG",
        "GOGC",
        "GOMAXPROCS",
        "GOMEMLIMIT",
        "GOTRACEBACK",
    }
)
# Locale categories, the interpreter's own switches, neonize's and this project's (engine, zygote,
# test switches): none carries a credential.
PASSED_PREFIXES = ("LC_", "PYTHON", "NEONIZE_", "WA_")


def child_env(**settings: str) -> dict[str, str]:
    """The start environment of a child: the supervisor's platform variables and ``settings``."""
    env = {name: value for name, value in os.environ.items() if name in PASSED or name.startswith(PASSED_PREFIXES)}
    env.update(settings)
    return env
