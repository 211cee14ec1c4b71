"""Polls with neonize: a poll built by neonize's own builder, and the votes on it as the supervisor takes them.

Pure but for the Go calls it is handed (``build``, ``decrypt``), so the tests drive it with neonize's
protobuf classes. A vote arrives as a message carrying ``pollUpdateMessage``; ``decrypt_poll_vote`` needs
the whole event (it finds the poll's secret by the key inside) and yields the SHA-256 digests of the
chosen option names. They go to the supervisor as they are, in hex: it maps them to names from the poll
in its history (supervisor/messaging/polls.py). A vote that cannot be decrypted still goes, with its
error, so it is reported instead of dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from neonize.proto.Neonize_pb2 import Message as MessageEv
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ContextInfo, Message, PollVoteMessage

from session_proc.engine import EngineError, OutgoingMessage, PollVote
from session_proc.neonize.incoming import POLL_FIELDS, phone_jid, unwrap

log = logging.getLogger("session.neonize.polls")

UNDECRYPTABLE = "undecryptable"

# (name, options, multiple) -> the Message neonize's builder returns (client.build_poll_vote_creation).
PollBuilder = Callable[[str, list[str], bool], Message]


@dataclass(slots=True, frozen=True)
class VoteRef:
    """Where a vote comes from and which poll it is on (WhatsApp's id), before decryption."""

    vote_id: str
    poll_wa_id: str
    chat: str
    voter: str
    timestamp: float  # epoch seconds


def build_poll(out: OutgoingMessage, build: PollBuilder, context: ContextInfo | None = None) -> Message:
    """The poll message for ``out``, made by neonize's builder (which adds the secret votes are sealed with)."""
    if out.poll is None:
        raise EngineError("INVALID_MESSAGE", "a poll message needs its poll")
    try:
        built = build(out.poll.name, list(out.poll.options), out.poll.multiple)
    except Exception as exc:
        raise EngineError("INVALID_MESSAGE", f"neonize refused the poll: {exc}") from None
    if context is not None:
        field = next((f for f in POLL_FIELDS if built.HasField(f)), None)  # type: ignore[arg-type]
        if field is None:
            raise EngineError("INVALID_MESSAGE", "neonize's poll builder returned no poll")
        getattr(built, field).contextInfo.MergeFrom(context)
    return built


def vote_ref(event: MessageEv) -> VoteRef | None:
    """The vote a message event carries, or None when it carries none."""
    content = unwrap(event.Message)
    if not content.HasField("pollUpdateMessage"):
        return None
    update = content.pollUpdateMessage
    source = event.Info.MessageSource
    # senderTimestampMS is when the voter voted (milliseconds); the event's own timestamp is a fallback.
    millis = update.senderTimestampMS or event.Info.Timestamp
    return VoteRef(
        vote_id=event.Info.ID,
        poll_wa_id=update.pollCreationMessageKey.ID,
        chat=phone_jid(source.Chat, source.SenderAlt),
        voter=phone_jid(source.Sender, source.SenderAlt),
        timestamp=millis / 1000.0,
    )


def read_vote(
    event: MessageEv, ref: VoteRef, decrypt: Callable[[MessageEv], PollVoteMessage], *, poll_id: str
) -> PollVote:
    """The vote for the supervisor: decrypted to option digests, or carrying why it could not be."""
    vote = PollVote(id=ref.vote_id, poll_id=poll_id, chat=ref.chat, voter=ref.voter, timestamp=ref.timestamp)
    try:
        decrypted = decrypt(event)
    except Exception as exc:
        # Logged without the vote's content (there is none readable); the supervisor records poll.vote_failed.
        log.warning("vote %s on poll %s could not be decrypted: %s", ref.vote_id, ref.poll_wa_id, exc)
        vote.error = UNDECRYPTABLE
        return vote
    vote.option_hashes = [bytes(digest).hex() for digest in decrypted.selectedOptions]
    return vote
