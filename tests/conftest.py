"""Settings every test runs under."""

from __future__ import annotations

import os

# Strict wire contract (transport/wire.py): a protocol error is raised where it is received, in this
# process and in every worker and session process the tests start (they inherit the environment).
os.environ["WA_WIRE_STRICT"] = "1"
