"""The operations the sim engine and the hub exchange over a transport channel.

Requests go from the engine (a DEALER) to the hub (the ROUTER) and are answered;
events go either way without an answer. Bodies use camelCase keys like the
hub's HTTP API.
"""

from __future__ import annotations

# -- engine → hub requests ---------------------------------------------------
# {sessionId, proxy, heartbeat, maxMediaBytes?, deviceId?, secret?} → {status: "linked"|"qr"|"unlinked", heartbeat, ...}
HELLO = "hello"
# {id, to, type, text, caption, mimetype, mediaSize, media?} → {id, timestamp}
SEND = "send"
# {phone} → {code}: a pairing code the phone can enter instead of scanning a QR
PAIR_CODE = "pair_code"
# {} → {}: unlink this device from its account
LOGOUT = "logout"
# {call: create|list|info|update|participants|invite|invite_info|join|leave, ...} → the call's answer
# (session_proc/sim/hub_groups.py): a group operation of the device's phone (issue 17)
GROUP = "group"
# {} → {}: the engine is stopping; the hub closes the connection now, not after a heartbeat timeout
BYE = "bye"

# -- engine → hub requests: contacts, blocking, disappearing (session_proc/sim/hub_contacts.py) -----
CHECK_PHONES = "check_phones"  # {phones: [digits]} → {results: [{phone, exists}]}
CONTACT_INFO = "contact_info"  # {phone} → {phone, pushName, about, pictureUrl}, or ERR_NOT_ON_WHATSAPP
SET_BLOCKED = "set_blocked"  # {phone, blocked} → {}
BLOCKLIST = "blocklist"  # {} → {phones}
SET_DISAPPEARING = "set_disappearing"  # {phone, seconds} → {}

# -- engine → hub events -----------------------------------------------------
ACK = "ack"  # {id}: the pushed message was taken over by the worker; stop redelivering it

# -- hub → engine events -----------------------------------------------------
QR = "qr"  # {code, expiresAt}
LINKED = "linked"  # {deviceId, secret, phone, pushName}: a phone scanned the QR or entered the code
MESSAGE = "message"  # {id, from, to, type, text, caption, mimetype, mediaSize, mediaBase64?, timestamp}
RECEIPT = "receipt"  # {id, status: "delivered"|"read", chat, timestamp}
REPLACED = "replaced"  # {}: another connection took over these credentials; do not reconnect
LOGGED_OUT = "logged_out"  # {reason}: the device was unlinked; the credentials are void
# {id, kind: joined|left|participants|updated, group, subject, by, action, participants, changes, timestamp}:
# a change of a group the device's phone is in; waits, like a message, until acked
GROUP_EVENT = "group_event"
DISCONNECT = "disconnect"  # {reason}: the server closed the connection; reconnect with backoff
# The reason of a DISCONNECT after the last QR went unscanned (like whatsmeow's QR channel timeout):
# the engine gives up instead of reconnecting.
REASON_QR_TIMEOUT = "qr_timeout"

# -- hello statuses ----------------------------------------------------------
STATUS_LINKED = "linked"
STATUS_QR = "qr"
STATUS_UNLINKED = "unlinked"

# -- error codes in replies ----------------------------------------------------
ERR_NOT_CONNECTED = "NOT_CONNECTED"  # the hub does not know this connection: hello again
ERR_SEND_REFUSED = "SEND_REFUSED"
ERR_BAD_REQUEST = "BAD_REQUEST"
ERR_ALREADY_LINKED = "ALREADY_LINKED"
ERR_NOT_ON_WHATSAPP = "NOT_ON_WHATSAPP"  # a contact request about a number that is not on WhatsApp
ERR_RECIPIENT_BLOCKED = "RECIPIENT_BLOCKED"  # a send to a number the account blocked: unblock first

MEDIA_TYPES = frozenset({"image", "document", "audio", "video", "sticker"})
# A vote travels as a MESSAGE (acked like one, redelivered until then) of this type, like WhatsApp's
# pollUpdateMessage: {id, from, to, type: "poll_vote", pollId, selectedHashes: [hex SHA-256 of option names],
# timestamp}; an empty list retracts the phone's vote.
POLL_VOTE_TYPE = "poll_vote"
# A send (or message push) of type "edit" (new text in text) or "revoke" changes the message named by
# editOf / revokeOf (session_proc/sim/hub_changes.py); an edit only within this many seconds of its sending.
EDIT_WINDOW = 15 * 60.0

# Optional message fields carried as they are, by the send and message ops and in inboxes:
# location (latitude, longitude, name, address), contact (name, vcard), reaction (reactionTo, emoji in text),
# reply (quotedId), mentions (list of JIDs). The hub checks their types, never their meaning (but a
# poll's shape: session_proc/sim/hub_polls.py).
EXTRA_FIELDS: dict[str, tuple[type, ...]] = {
    "latitude": (int, float),
    "longitude": (int, float),
    "name": (str,),
    "address": (str,),
    "vcard": (str,),
    "reactionTo": (str,),
    "quotedId": (str,),
    "mentions": (list,),
    # polls, stickers, view-once, voice notes: poll {name, options, multiple}; the flags only when true
    "poll": (dict,),
    "viewOnce": (bool,),
    "voice": (bool,),
}

# -- read receipts, presence and calls (session_proc/sim/account.py, hub_account.py) ---------
# engine → hub requests
# {chat: phone | groupJid, sender: phone (in a group), ids: [...]} → {read: n}: read receipts to the phone
# that sent them (in a group, the participant)
READ = "read"
# {state, to?: phone | groupJid} → {}: available/unavailable, or typing/recording/paused in a chat
# (in a group, shown to every other member)
PRESENCE = "presence"
REJECT_CALL = "reject_call"  # {id} → {}: decline a ringing call
# engine → hub events
CALL_ACK = "call_ack"  # {id}: the call was taken over by the worker; stop redelivering it
# hub → engine events (presence is not kept for an offline device; calls wait for their ack)
CHAT_PRESENCE = "chat_presence"  # {from, state}
PRESENCE_UPDATE = "presence_update"  # {from, online, lastSeen}
CALL = "call"  # {id, from, video, timestamp}
ACCOUNT_EVENTS = frozenset({CHAT_PRESENCE, PRESENCE_UPDATE, CALL})
