"""Whether a failed neonize send may be sent again, read from whatsmeow's error text.

neonize 0.5.2 sends under ids whatsmeow picks, so a message sent twice reaches the
recipient twice. A send may therefore be retried only when whatsmeow failed before
anything reached the network: no connection, no device list, no encryption, a
recipient it cannot address. Every other error (a write that failed on the socket,
a timeout waiting for the server, an unexpected server answer, an error text this
list does not know) leaves the outcome open: the message is reported ``unknown``,
never resent blindly. A send to a group the account is not in, or to no group at
all, fails for good (``GROUP_NOT_FOUND``) when whatsmeow says so before sending.

The texts are whatsmeow's own (errors.go and send.go); neonize raises them as the
exception's message.
"""

from __future__ import annotations

# The send may be retried: whatsmeow gave up before it wrote the message node.
RETRYABLE = "SEND_FAILED"
# The send can never succeed as asked: failing it at once is right.
REFUSED = "INVALID_RECIPIENT"
# Anything else: the message may or may not have left.
UNKNOWN = "OUTCOME_UNKNOWN"
# A group this account is not in, or no such group: never sent, and no retry changes that.
GROUP_NOT_FOUND = "GROUP_NOT_FOUND"

# Prefixes of errors raised while preparing the message node, before any of it was written.
_BEFORE_NETWORK = (
    "websocket not connected",  # ErrNotConnected: no socket to write to
    "the store doesn't contain a device jid",  # ErrNotLoggedIn
    "client is nil",
    "failed to get device list",  # usync query for the recipient's devices
    "failed to get group members",
    "failed to get broadcast list members",
    "failed to get lid for pn",
    "failed to get user info for",
    "no lid found for",
    "failed to fetch lid mappings",
    "failed to prefetch sessions",
    "failed to save cached sessions",
    "failed to clear untrusted identity",
    "failed to process prekey bundle",
    "can't encrypt message for device",  # ErrNoSession
    "cipher encryption failed",
    "failed to encrypt peer message",
    "failed to encrypt group message",
    "failed to create sender key distribution message",
    "failed to marshal sender key distribution message",
    "failed to marshal message",
    "only one extra parameter may be provided",
)
# whatsmeow wraps a write error as "failed to send message node: <cause>"; only a missing
# socket proves nothing was written.
_WRITE_PREFIX = "failed to send message node: "
# whatsmeow asks the server for a group's members before a first send to it (getCachedGroupData) and
# wraps the refusal: 403 is ErrNotInGroup, 404 ErrGroupNotFound. Once it knows the group's members
# (an earlier send or info request in this process) it asks nothing and sends: whatever the server
# answers then is "server returned error <code>", an open outcome. Nor does whatsmeow check an
# announce group's setting: that send goes out and the server decides (see the README).
_GROUP_GONE = (
    "failed to get group members: you're not participating in that group",
    "failed to get group members: that group does not exist",
)
# Recipients whatsmeow cannot address at all.
_REFUSED = (
    "can't send message to unknown server",  # ErrUnknownServer
    "message recipient must be a user jid with no device part",  # ErrRecipientADJID
    "sending to non-status broadcast lists is not yet supported",  # ErrBroadcastListUnsupported
    "invalid inline bot id",
)


def classify(error: str) -> str:
    """``RETRYABLE``, ``REFUSED``, ``GROUP_NOT_FOUND`` or ``UNKNOWN`` for one send error's text."""
    text = error.strip().lower()
    if text.startswith(_GROUP_GONE):
        return GROUP_NOT_FOUND
    if text.startswith(_WRITE_PREFIX):
        cause = text.removeprefix(_WRITE_PREFIX)
        return RETRYABLE if cause == "websocket not connected" else UNKNOWN
    if text.startswith(_REFUSED):
        return REFUSED
    if text.startswith(_BEFORE_NETWORK):
        return RETRYABLE
    return UNKNOWN
