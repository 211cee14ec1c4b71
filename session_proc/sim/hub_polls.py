"""Polls on the simulated network: the shape a poll must have, and a phone's vote on one.

The hub keeps a poll as part of the message in the phone's inbox (``extra["poll"]``). A vote goes to the
poll's sender as WhatsApp sends it: the SHA-256 digests of the chosen options' names, never the names,
so the engine's side has to map them back as it must with real WhatsApp.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from session_proc.sim import ops

if TYPE_CHECKING:
    from session_proc.sim.hub_store import InboxEntry

MIN_OPTIONS, MAX_OPTIONS = 2, 12


def _error(status: int, code: str, message: str) -> Exception:
    from session_proc.sim.hub import HubError  # the hub imports this module

    return HubError(status, code, message)


def check_poll(value: Any) -> dict[str, Any]:
    """A poll {name, options, multiple} as WhatsApp would take it, or HubError 400."""
    name, options, multiple = value.get("name"), value.get("options"), value.get("multiple", False)
    if not isinstance(name, str) or not name.strip():
        raise _error(400, "BAD_POLL", "poll.name must be a non-empty string")
    if (
        not isinstance(options, list)
        or not MIN_OPTIONS <= len(options) <= MAX_OPTIONS
        or not all(isinstance(o, str) and o.strip() for o in options)
        or len(set(options)) != len(options)
    ):
        raise _error(400, "BAD_POLL", f"poll.options must be {MIN_OPTIONS}-{MAX_OPTIONS} distinct non-empty strings")
    if not isinstance(multiple, bool):
        raise _error(400, "BAD_POLL", "poll.multiple must be true or false")
    return {"name": name, "options": list(options), "multiple": multiple}


def option_hash(name: str) -> str:
    """How WhatsApp names an option in a vote: the hex SHA-256 of its text."""
    return hashlib.sha256(name.encode()).hexdigest()


def vote_body(entry: InboxEntry | None, body: dict[str, Any], *, vote_id: str, at: float) -> dict[str, Any]:
    """The vote message for the poll's sender, from ``POST /phones/{phone}/polls/{messageId}/vote {options}``.

    Raises HubError: 404 when the phone received no such poll, 400 for options that are not the poll's
    or more than one on a single-choice poll.
    """
    poll = entry.extra.get("poll") if entry is not None else None
    if entry is None or not isinstance(poll, dict):
        raise _error(404, "POLL_NOT_FOUND", "this phone received no poll with that id")
    chosen = body.get("options")
    if not isinstance(chosen, list) or not all(isinstance(o, str) for o in chosen):
        raise _error(400, "BAD_REQUEST", "options must be a list of option names ([] retracts the vote)")
    if len(set(chosen)) != len(chosen):
        raise _error(400, "DUPLICATE_OPTIONS", "an option is chosen once")
    unknown = [o for o in chosen if o not in poll["options"]]
    if unknown:
        raise _error(400, "UNKNOWN_OPTION", f"{len(unknown)} of the options are not this poll's")
    if not poll.get("multiple") and len(chosen) > 1:
        raise _error(400, "TOO_MANY_OPTIONS", "this poll allows one option")
    return {
        "id": vote_id,
        "from": entry.phone,
        "to": entry.from_phone,
        "type": ops.POLL_VOTE_TYPE,
        "pollId": entry.id,
        "selectedHashes": [option_hash(o) for o in chosen],
        "timestamp": at,
    }
