"""Group JIDs on the simulated network (issue 17): ``120363<digits>@g.us``, as WhatsApp's."""

from __future__ import annotations

GROUP_SERVER = "g.us"


def is_group(address: object) -> bool:
    """Whether ``address`` is a group JID (``<digits>@g.us``, or the older ``<digits>-<digits>@g.us``)."""
    if not isinstance(address, str):
        return False
    user, _, server = address.partition("@")
    return server == GROUP_SERVER and user.replace("-", "").isdigit()
