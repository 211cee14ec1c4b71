"""Addresses on the simulated network, as WhatsApp's: a person's JID ``<phone>@s.whatsapp.net``, a
group's ``120363<digits>@g.us``."""

from __future__ import annotations

USER_SERVER = "s.whatsapp.net"
GROUP_SERVER = "g.us"


def jid(phone: str) -> str:
    """The user JID of a phone number: ``628123@s.whatsapp.net``."""
    return f"{phone}@{USER_SERVER}"


def phone_of(address: str) -> str | None:
    """The phone number (digits) of a user JID or a bare number; None for groups and garbage."""
    user, _, server = address.partition("@")
    if server not in ("", USER_SERVER):
        return None
    user = user.split(":", 1)[0]  # a device JID (628123:12@...) names the same number
    return user if user.isascii() and user.isdigit() else None


def is_group(address: object) -> bool:
    """Whether ``address`` is a group JID (``<digits>@g.us``, or the older ``<digits>-<digits>@g.us``)."""
    if not isinstance(address, str):
        return False
    user, _, server = address.partition("@")
    return server == GROUP_SERVER and user.replace("-", "").isdigit()
