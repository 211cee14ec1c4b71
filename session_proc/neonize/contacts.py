"""Contacts, blocking and disappearing messages through neonize 0.5.2, and the mapping of its answers.

The mapping functions are pure, over neonize's own protobuf types, so tests build real answers.
The calls (``check``, ``lookup``, ``set_blocked``, ``blocklist``, ``set_disappearing``) block on
Go: the engine runs them in a worker thread, only while connected. Measured traps they avoid:

- ``set_disappearing_timer`` turns a ``timedelta`` into milliseconds where Go reads nanoseconds
  (24 hours become 86 ms), and then calls ``.decode()`` on the ``c_void_p`` (an int) Go returns, so
  it raises after the timer was sent either way. The Go function is called here with an int of
  nanoseconds and its answer read as the C string it is.
- ``is_on_whatsapp`` takes numbers with a leading ``+``; its answers echo the query, matched back here
  by digits (and by the JID's user when the echo differs).
- ``get_profile_picture`` raises when there is no picture or it is hidden: that is "no picture".
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import Any

from neonize.proto.Neonize_pb2 import JID, Blocklist, ContactInfo, IsOnWhatsAppResponse, ProfilePictureInfo, UserInfo

from session_proc.engine import EngineError
from session_proc.neonize.incoming import jid_str, parse_jid
from transport.wire import ContactCard, PhoneCheck

NANOSECONDS = 1_000_000_000
REFUSED = "WHATSAPP_REFUSED"  # WhatsApp (or whatsmeow) refused or failed the request


# -- mapping (pure) ------------------------------------------------------------------------
def _digits(text: str) -> str:
    return "".join(c for c in text.partition("@")[0].split(":", 1)[0] if c.isdigit())


def phone_checks(asked: list[str], responses: Iterable[IsOnWhatsAppResponse]) -> list[PhoneCheck]:
    """One check per number asked, in that order; a number WhatsApp did not answer for does not exist."""
    found: dict[str, str] = {}
    for response in responses:
        if not response.IsIn:
            continue
        jid = jid_str(response.JID) if response.JID.User else None
        for key in {_digits(response.Query), response.JID.User}:
            if key and jid:
                found[key] = jid
    return [PhoneCheck(phone=p, exists=p in found, jid=found.get(p)) for p in asked]


def contact_card(
    jid: str, *, info: UserInfo | None, contact: ContactInfo | None, picture: ProfilePictureInfo | None
) -> ContactCard:
    """A contact's profile from its user info (about), the contact store (push name) and its picture."""
    return ContactCard(
        jid=jid,
        push_name=(contact.PushName or None) if contact is not None and contact.Found else None,
        about=(info.Status or None) if info is not None else None,
        picture_url=(picture.URL or None) if picture is not None else None,
    )


def blocklist_jids(blocklist: Blocklist) -> list[str]:
    """The blocked users' JIDs (no device part)."""
    return [jid_str(j) for j in blocklist.JIDs]


def timer_nanoseconds(seconds: int) -> int:
    """A disappearing timer as Go's ``time.Duration`` reads it."""
    return seconds * NANOSECONDS


def c_error(pointer: int | None) -> str:
    """The error text behind the ``char *`` a Go export returned (empty: no error)."""
    return ctypes.string_at(pointer).decode(errors="replace") if pointer else ""


# -- calls (blocking; connected client only) -------------------------------------------------
def check(client: Any, phones: list[str]) -> list[PhoneCheck]:
    """Which of ``phones`` (digits) are on WhatsApp."""
    try:
        responses = client.is_on_whatsapp(*(f"+{p}" for p in phones))
    except Exception as exc:
        raise EngineError(REFUSED, f"WhatsApp did not answer the number check: {exc}") from None
    return phone_checks(phones, responses)


def lookup(client: Any, address: str) -> ContactCard:
    """A user's profile; EngineError NOT_ON_WHATSAPP when the number is not on WhatsApp."""
    phone = _user_jid(address).User
    [result] = check(client, [phone])
    if not result.exists or result.jid is None:
        raise EngineError("NOT_ON_WHATSAPP", f"{phone} is not on WhatsApp")
    jid = parse_jid(result.jid)
    try:
        infos = client.get_user_info(jid)
    except Exception as exc:
        raise EngineError(REFUSED, f"WhatsApp did not give the user's info: {exc}") from None
    info = next((i.UserInfo for i in infos if i.JID.User == jid.User), None)
    try:
        contact = client.get_contact(jid)  # whatsmeow's local store: push names seen in messages
    except Exception:
        contact = None
    try:
        picture = client.get_profile_picture(jid)
    except Exception:
        picture = None  # none set, or hidden from us
    return contact_card(result.jid, info=info, contact=contact, picture=picture)


def set_blocked(client: Any, address: str, blocked: bool) -> None:
    """Block or unblock a user."""
    from neonize.utils.enum import BlocklistAction  # neonize.utils is heavy (libmagic): only when used

    jid = _user_jid(address)
    try:
        client.update_blocklist(jid, BlocklistAction.BLOCK if blocked else BlocklistAction.UNBLOCK)
    except Exception as exc:
        raise EngineError(REFUSED, f"WhatsApp refused the blocklist change: {exc}") from None


def blocklist(client: Any) -> list[str]:
    """The account's blocklist."""
    try:
        return blocklist_jids(client.get_blocklist())
    except Exception as exc:
        raise EngineError(REFUSED, f"WhatsApp did not give the blocklist: {exc}") from None


def set_disappearing(gocode: Any, uuid: bytes, address: str, seconds: int) -> None:
    """Set a chat's timer through the Go export itself (see the module's note); 0 as the setting time: now."""
    try:
        jid = parse_jid(address)
    except ValueError as exc:
        raise EngineError("INVALID_RECIPIENT", str(exc)) from None
    buf = jid.SerializeToString()
    error = c_error(gocode.SetDisappearingTimer(uuid, buf, len(buf), timer_nanoseconds(seconds), 0))
    if error:
        raise EngineError(REFUSED, f"WhatsApp refused the disappearing timer: {error}")


def _user_jid(address: str) -> JID:
    try:
        jid = parse_jid(address)
    except ValueError as exc:
        raise EngineError("INVALID_RECIPIENT", str(exc)) from None
    if jid.Server != "s.whatsapp.net":
        raise EngineError("INVALID_RECIPIENT", f"{address!r} is not a user JID")
    return jid
