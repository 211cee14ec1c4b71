"""Group changes a session process reports (issue 17), committed to the durable event log.

Like an incoming message, a group change is answered only after its event is committed, and only
then acknowledged to the network: it is never lost, and events of one session keep the order the
session process reported them in (it hands them over one at a time). A change delivered again after
a crash between the commit and the acknowledgement is committed again with the same ``id``.
"""

from __future__ import annotations

import logging
from typing import Any

from supervisor.database.store import Store
from supervisor.timefmt import iso
from transport import wire

log = logging.getLogger("supervisor.sessions")

EVENT_NAMES = {
    "joined": "group.joined",
    "left": "group.left",
    "participants": "group.participants",
    "updated": "group.updated",
}


def group_event_data(event: wire.GroupEvent) -> dict[str, Any]:
    """The event's data as consumers see it (README, "Events")."""
    data: dict[str, Any] = {"id": event.id, "group": event.group, "by": event.by}
    if event.subject is not None:
        data["subject"] = event.subject
    if event.kind == "participants":
        data["action"] = event.action
        data["participants"] = event.participants
    elif event.kind == "updated":
        data["changes"] = event.changes
    data["at"] = iso(event.timestamp) if event.timestamp > 0 else None
    return data


async def commit_group_event(store: Store, session_id: str, event: wire.GroupEvent) -> None:
    """Commit one group change as its event; answered (and acknowledged) only after this returns."""
    name = EVENT_NAMES.get(event.kind)
    if name is None:
        log.warning("unknown group event kind %r dropped", event.kind, extra={"sessionId": session_id})
        return
    await store.add_event(session_id, name, group_event_data(event))
    log.info("%s %s committed", name, event.group, extra={"sessionId": session_id})
