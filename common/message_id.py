"""WhatsApp message ids: the worker chooses one before a message is handed to a session,
and the simulated network chooses them for its own peers' messages."""

import secrets


def new_message_id() -> str:
    """An id shaped like whatsmeow's GenerateMessageID: ``3EB0`` and 18 upper-case hex digits."""
    return "3EB0" + secrets.token_hex(9).upper()
