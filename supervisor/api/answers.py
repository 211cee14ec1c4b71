"""What the API answers: every response body, declared once.

The OpenAPI document's response schemas are generated from these models, with
``additionalProperties: false``: an answer carrying a field declared nowhere
fails the contract test (tests/conftest.py validates every answer the suite
receives against the served document). Successful answers are wrapped as
``{"success": true, "data": <model>}`` except /health and /metrics, which answer
their figures as they are; errors are ``Error``.

Routes build their answers as plain dicts (no second validation per request);
the field names here are the seed's and must not change.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from supervisor.api.codes import ErrorCode
from supervisor.sessions.status import SessionStatus as Status
from supervisor.supervision.states import ProcState
from supervisor.timefmt import ISO_PATTERN

# Every point in time an answer carries (supervisor/timefmt.py writes them); durations are numbers of seconds.
IsoTime = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": ISO_PATTERN.pattern,
            "description": "ISO 8601 UTC with milliseconds",
            "examples": ["2026-12-01T01:59:18.236Z"],
        }
    ),
]
SessionStatus = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "enum": [s.value for s in Status],
            "description": "initializing, qr_ready and connected hold while the process runs; logged_out needs a "
            "new QR; failed means the restart budget is spent (POST /session/{id}/restart revives it)",
        }
    ),
]
MaskedProxy = Annotated[
    str | None,
    Field(
        description="the session's proxy with its password masked (socks5://user:***@host:1080); null when it "
        "has none, or when its stored proxy cannot be read (then it stays down and its error says why)",
        examples=["socks5://user:***@203.0.113.7:1080"],
    ),
]
ProcessState = Literal["STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL"]
assert set(ProcessState.__args__) == {s.value.upper() for s in ProcState}  # type: ignore[attr-defined]


class Answer(BaseModel):
    """An answer's shape: every field it may carry is declared, nothing else may appear."""

    model_config = ConfigDict(extra="forbid")


class Error(Answer):
    """Every error answer."""

    success: Literal[False]
    error: Annotated[str, Field(description="for people")]
    code: Annotated[ErrorCode, Field(description="for programs")]


class Memory(Answer):
    rss: int | None
    uss: int | None


class ExitInfo(Answer):
    """How a session's process last ended."""

    at: IsoTime
    reason: Annotated[str, Field(examples=["killed by SIGKILL"])]
    code: int | None
    signal: int | None
    crashed: bool


class WebhookCreated(Answer):
    url: str
    secret: Annotated[str, Field(description="for X-Signature; shown only here")]


class CreateSessionResult(Answer):
    """POST /session/create."""

    sessionId: str
    status: SessionStatus
    qrCode: Annotated[str | None, Field(description="data:image/png;base64,... once a QR is there")]
    webhook: WebhookCreated | None = None


class QrResult(Answer):
    """GET /session/{id}/qr."""

    sessionId: str
    qrCode: Annotated[str | None, Field(description="the QR as a PNG data URL")]
    qr: Annotated[str | None, Field(description="the raw QR string")]
    status: SessionStatus
    expiresAt: Annotated[IsoTime | None, Field(description="when this QR stops working")]
    qrCount: int


class StatusResult(Answer):
    """GET /session/{id}/status."""

    sessionId: str
    status: SessionStatus
    phoneNumber: str | None
    lastSeen: IsoTime | None
    messageCount: int
    error: str | None
    proxy: MaskedProxy


class ProcessView(Answer):
    """A session and its process, as an operator sees it (GET /sessions items)."""

    sessionId: str
    userId: str | None
    sessionName: str | None
    status: SessionStatus
    statusSince: IsoTime | None
    secondsInStatus: float
    phoneNumber: str | None
    processState: ProcessState
    pid: int | None
    restarts: int
    uptime: float
    cpuPercent: float | None
    memory: Memory
    threads: int | None
    openFiles: int | None
    lastExit: ExitInfo | None
    lastError: str | None
    qrCount: int
    messageCount: int
    proxy: MaskedProxy


class ProcessDetail(ProcessView):
    """GET /session/{id}/process: the process view and its recent exits, newest first."""

    exits: list[ExitInfo]


class SessionList(Answer):
    sessions: list[ProcessView]


class Deleted(Answer):
    sessionId: str
    deleted: bool


class Restarted(Answer):
    sessionId: str
    status: SessionStatus


class LoggedOut(Answer):
    sessionId: str
    status: SessionStatus
    loggedOut: bool


class PairingCode(Answer):
    sessionId: str
    phoneNumber: str
    pairingCode: Annotated[str, Field(examples=["ABCD-EFGH"])]


class SendResult(Answer):
    """POST /session/{id}/send."""

    messageId: str
    status: Literal["queued", "pending", "sent", "failed", "unknown"]
    timestamp: Annotated[IsoTime | None, Field(description="when it was sent (null while queued or pending)")]
    scheduledAt: Annotated[
        IsoTime | None, Field(description="queued: when its paced slot comes (it is sent then, in order)")
    ] = None
    error: Annotated[str | None, Field(description="why it failed")] = None
    mediaUrl: Annotated[str | None, Field(description="a media send's stored file")] = None


class PollSpec(Answer):
    """A poll as sent: its question, options and whether several may be chosen."""

    name: str
    options: list[str]
    multiple: bool


class Reaction(Answer):
    """One person's reaction to a message."""

    model_config = ConfigDict(populate_by_name=True)

    sender: Annotated[str | None, Field(alias="from", description="the reactor's JID")]
    emoji: str


class MessageChanged(Answer):
    """PATCH /session/{id}/messages/{messageId} and DELETE (revokedAt instead of editedAt)."""

    messageId: Annotated[str, Field(description="the message edited or deleted")]
    status: Annotated[
        Literal["pending", "sent", "failed", "unknown"],
        Field(description="of the change, sent through the outbox like a message"),
    ]
    editedAt: Annotated[IsoTime | None, Field(description="when the edit was sent (null while pending)")] = None
    revokedAt: Annotated[IsoTime | None, Field(description="when the revoke was sent (null while pending)")] = None
    error: Annotated[str | None, Field(description="why the change failed")] = None


class Message(Answer):
    """One message of the history (also the data of message events)."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    direction: Literal["in", "out"]
    chat: str
    sender: Annotated[str | None, Field(alias="from")]
    to: str | None
    type: str
    text: str | None
    caption: str | None
    mimetype: str | None
    mediaSize: int | None
    mediaUrl: str | None
    timestamp: IsoTime | None
    status: str
    error: str | None
    # what some types carry besides (location, contact, reaction, reply, mentions)
    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    address: str | None = None
    vcard: str | None = None
    reactionTo: str | None = None
    replyTo: str | None = None
    mentions: list[str] | None = None
    participant: Annotated[
        str | None, Field(description="a group message: who in the group sent it (chat is the group)")
    ] = None
    mediaError: Annotated[
        Literal["too_large", "download_failed"] | None,
        Field(
            description="a received media message kept without its media: over MAX_INCOMING_MEDIA_MB"
            " (never downloaded), or the download failed"
        ),
    ] = None
    # edits, revokes and reactions (messaging/changes.py, database/message_changes.py)
    editedAt: Annotated[IsoTime | None, Field(description="when its text (or caption) was last edited")] = None
    revoked: Annotated[bool | None, Field(description="deleted for everyone: no text, caption or media")] = None
    revokedAt: IsoTime | None = None
    reactions: Annotated[
        list[Reaction], Field(description="each reactor's latest reaction (an empty emoji removed it)")
    ] = []
    # polls, stickers, view-once, voice notes
    poll: Annotated[PollSpec | None, Field(description="type poll: its question and options")] = None
    viewOnce: Annotated[bool | None, Field(description="an image or video shown once (only when true)")] = None
    voice: Annotated[bool | None, Field(description="an audio sent as a voice note (only when true)")] = None


class PollOption(Answer):
    """One option of a poll and who chose it (each voter's latest vote)."""

    name: str
    votes: int
    voters: Annotated[list[str], Field(description="JIDs of the voters whose latest vote chose it")]


class PollResults(Answer):
    """GET /session/{id}/polls/{messageId}: the tally, each voter's latest vote counted."""

    messageId: str
    name: str
    multiple: bool
    options: list[PollOption]
    voters: Annotated[
        list[str], Field(description="JIDs of everyone whose latest vote chose an option (a retraction leaves)")
    ]


class Pagination(Answer):
    total: int
    limit: int
    offset: int


class OutboxEntry(Answer):
    """A message waiting in a session's outbox."""

    messageId: str
    to: str
    type: str
    acceptedAt: IsoTime
    scheduledAt: Annotated[IsoTime, Field(description="when it goes out (its paced slot, or its next attempt)")]
    reason: Annotated[
        Literal["gap", "cold_chat", "daily_cap", "chat_order", "retry", "not_connected", "due", "sending"],
        Field(description="why it waits: a pacing rule, a retry after a failed attempt, the session's state"),
    ]
    attempts: int
    expiresAt: Annotated[IsoTime, Field(description='failed with error "ttl" if not sent by then')]


class Cancelled(Answer):
    """DELETE /session/{id}/outbox/{messageId}."""

    messageId: str
    status: Literal["failed"]
    error: Literal["cancelled"]


class MessagesPage(Answer):
    """GET /session/{id}/messages."""

    messages: list[Message]
    pagination: Pagination


class Event(Answer):
    """One event of the durable log, as every consumer receives it."""

    id: Annotated[int, Field(description="sequence number: pass it as since / Last-Event-ID")]
    event: Annotated[str, Field(examples=["message.received"])]
    sessionId: str | None
    data: dict[str, Any]
    timestamp: IsoTime


class EventsPage(Answer):
    """GET /events."""

    events: list[Event]
    nextSince: Annotated[int, Field(description="pass back as since to continue")]
    latest: int


class StreamedEvent(Answer):
    """One Server-Sent Event of GET /events/stream: its ``data`` is an ``Event`` as JSON."""

    id: Annotated[str, Field(description="the event's sequence number (send it back as Last-Event-ID)")]
    event: Annotated[str, Field(examples=["message.received"])]
    data: Annotated[
        str,
        WithJsonSchema(
            {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/Event"},
            }
        ),
    ]
    retry: int | None = None


class WebhookSet(Answer):
    sessionId: str
    url: str
    secret: str


class WebhookInfo(Answer):
    sessionId: str
    url: str
    delivered: int
    failures: int
    lastError: str | None


# -- /health ------------------------------------------------------------------------------------------


class SeedSessions(Answer):
    """The seed's session counts, shown to anyone who asks /health."""

    total: int
    connected: int
    disconnected: int


HealthSessions = create_model(
    "HealthSessions",
    __base__=SeedSessions,
    max=(int, ...),
    active=(int, ...),
    **{s.value: (int, ...) for s in Status if s.value not in SeedSessions.model_fields},  # type: ignore[call-overload]
)


class SupervisorFigures(Answer):
    pid: int
    cpuPercent: float | None
    memory: Memory


class SessionProcessFigures(Answer):
    processes: int
    cpuPercent: float
    memory: Memory


class SystemMemory(Answer):
    total: int
    available: int
    percent: float


class SystemFigures(Answer):
    cpuCount: int | None
    cpuPercent: float
    loadAverage: list[float]
    memory: SystemMemory


class SeedResources(Answer):
    """The seed's three figures: the worker's share of what it may use."""

    cpuUsage: Annotated[
        float | None,
        Field(
            description="percent of the CPUs the worker may use (its container's quota, else the machine's) used "
            "by the supervisor and its session processes together; null before the first sample"
        ),
    ]
    memoryUsage: Annotated[
        float | None,
        Field(
            description="percent of memoryTotal they hold resident (RSS summed, so it errs high); "
            "null before the first sample"
        ),
    ]
    memoryTotal: Annotated[
        int | None, Field(description="MB the worker may use: its container's memory limit, else the machine's RAM")
    ]


class Resources(SeedResources):
    """The seed's three figures, then each process's own."""

    supervisor: SupervisorFigures
    sessions: SessionProcessFigures
    system: SystemFigures


class Liveness(Answer):
    aliveUntil: IsoTime | None
    lapsed: bool


class StorageHealth(Answer):
    """The local disk (status, writable, free space) and, with object storage, its figures."""

    type: str
    path: str | None = None
    status: Literal["ok", "error"] | None = None
    writable: bool | None = None
    freeBytes: int | None = None
    totalBytes: int | None = None
    error: str | None = None
    minioConnected: Annotated[bool | None, Field(description="false also when no MinIO is configured")] = None
    connected: bool | None = None
    pendingBackups: int | None = None
    lastBackupAt: IsoTime | None = None
    backupsDone: int | None = None
    leasesHeld: int | None = None
    leasesUnverified: int | None = None
    pendingRemovals: int | None = None
    lowSpace: Annotated[
        bool | None, Field(description="less free space than DISK_FREE_WARN_MB: writes will soon answer 507")
    ] = None
    liveness: Liveness | None = None
    encrypted: bool | None = None


class SeedStorage(Answer):
    """The seed's two storage booleans, shown to anyone who asks /health."""

    minioConnected: Annotated[bool, Field(description="false also when no MinIO is configured")]
    dbConnected: Annotated[bool, Field(description="the database answers")]


class HealthStorage(StorageHealth, SeedStorage):
    """/health's ``storage`` for a caller with credentials: the seed's two booleans and the details."""

    minioConnected: Annotated[bool, Field(description="false also when no MinIO is configured")]


class DatabaseHealth(Answer):
    type: str
    path: str
    status: Literal["ok", "error"]
    latencyMs: float | None = None
    error: str | None = None


class BackendHealth(Answer):
    status: Literal["not_configured", "reachable", "unreachable"]
    url: str | None = None
    error: str | None = None


class PublicHealth(Answer):
    """GET /health without credentials: the seed's fields only (no paths, pids, URLs or settings)."""

    status: Literal["healthy", "degraded", "unhealthy", "draining"]
    workerId: str
    uptime: Annotated[float, Field(description="seconds since the worker started")]
    timestamp: IsoTime
    sessions: SeedSessions
    resources: SeedResources
    storage: SeedStorage


class Health(PublicHealth):
    """GET /health with the worker token or a JWT: the seed's fields, then the details an operator reads."""

    engine: str
    sessions: HealthSessions  # type: ignore[valid-type]
    resources: Resources
    storage: HealthStorage
    database: DatabaseHealth
    backend: BackendHealth


# Not wrapped in an envelope: probes read it as it is.
HealthAnswer = Health | PublicHealth


# -- /metrics -----------------------------------------------------------------------------------------


class WorkerFigures(Answer):
    id: str
    endpoint: Annotated[str, Field(description="the URL the backend reaches this worker at (WORKER_ENDPOINT)")]
    startTime: IsoTime
    version: Annotated[str, Field(description="the worker's package version")]
    uptime: Annotated[float, Field(description="seconds since startTime")]
    engine: str
    cpuPercent: float | None
    memory: Memory


class SessionFigures(Answer):
    total: int
    active: int
    max: int
    byStatus: dict[str, int]


class MessageFigures(Answer):
    sent: int
    received: int
    failed: int
    pending: int
    lastHour: Annotated[int, Field(description="messages in and out in the last hour")]
    purged: Annotated[int, Field(description="messages removed by MESSAGE_RETENTION_DAYS since the worker started")]


class EventConsumerFigures(Answer):
    name: Annotated[str, Field(description="backend, or webhook:<sessionId>")]
    sessionId: Annotated[str | None, Field(description="the session a webhook hears; null: every session")]
    lastEventId: Annotated[int, Field(description="the last event it received")]
    oldestUndeliveredAge: Annotated[
        float | None, Field(description="seconds since the oldest event it has yet to receive; null: up to date")
    ]


class Performance(Answer):
    avgResponseTime: Annotated[float, Field(description="milliseconds, last 5 minutes")]
    errorRate: Annotated[float, Field(description="share (0-1) of 5xx answers, last 5 minutes")]
    throughput: Annotated[float, Field(description="requests per second, last 5 minutes")]
    requests: int
    window: float


class DatabaseFigures(Answer):
    commits: Annotated[int, Field(description="SQLite commits since start")]
    writes: Annotated[int, Field(description="write transactions, grouped into commits")]
    outboxWaiting: Annotated[int, Field(description="outgoing messages not settled yet")]


class SessionOutboxFigures(Answer):
    """What waits in one session's outbox (paced, or not sent yet), as ``wa_worker_session_outbox_*``."""

    sessionId: str
    pending: Annotated[int, Field(description="messages accepted and waiting in the session's outbox")]
    oldestPendingAt: Annotated[IsoTime | None, Field(description="when the oldest of them was accepted; null: none")]
    oldestPendingAge: Annotated[
        float | None, Field(description="seconds the oldest of them has waited; null: none waits")
    ]


class Metrics(Answer):
    """GET /metrics as JSON (not wrapped in an envelope)."""

    worker: WorkerFigures
    sessions: SessionFigures
    messages: MessageFigures
    eventConsumers: list[EventConsumerFigures]
    performance: Performance
    database: DatabaseFigures
    outboxes: Annotated[list[SessionOutboxFigures], Field(description="every session's outbox, in session order")]
    storage: StorageHealth | None
    timestamp: IsoTime


# -- read receipts, presence, settings, chats (supervisor/api/account_routes.py) -------------------


class ReadResult(Answer):
    """POST /session/{id}/read."""

    chat: str
    read: Annotated[list[str], Field(description="ids whose read receipts were sent")]
    unknown: Annotated[
        list[str], Field(description="ids that are not received messages of this chat: nothing was sent for them")
    ]


class PresenceResult(Answer):
    """POST /session/{id}/presence."""

    state: str
    chat: str | None


class PacingView(Answer):
    """A session's pace (README "Paced sending")."""

    gap: float
    coldGap: float
    jitter: float
    dailyCap: int
    warmupDays: float
    typing: bool


class SessionSettingsView(Answer):
    """GET and PUT /session/{id}/settings."""

    sessionId: str
    rejectCalls: Annotated[bool, Field(description="the session declines incoming calls itself")]
    pacing: Annotated[PacingView, Field(description="the pace in force: the session's own settings over PACING_*")]
    pacingOwn: Annotated[
        dict[str, float | int | bool],
        Field(description="the pacing settings set for this session (the others follow the worker's defaults)"),
    ]


class Chat(Answer):
    """One chat of the history."""

    jid: str
    lastMessage: Annotated[Message | None, Field(description="the newest message (null once purged)")]
    unread: Annotated[int, Field(description="received messages after our last read receipt or message in it")]
    lastActivity: IsoTime


class ChatsPage(Answer):
    """GET /session/{id}/chats."""

    chats: list[Chat]
    pagination: Pagination


# -- contacts, blocking, disappearing messages ------------------------------------------------------
class PhoneCheck(Answer):
    phone: Annotated[str, Field(description="the number asked, in digits")]
    exists: Annotated[bool, Field(description="whether the number is on WhatsApp")]
    jid: Annotated[str | None, Field(description="its user JID; null when it is not on WhatsApp")]


class PhoneChecks(Answer):
    """POST /session/{id}/contacts/check: one result per number, in the order asked."""

    results: list[PhoneCheck]


class Contact(Answer):
    """GET /session/{id}/contacts/{jid}: what the contact shows of itself (null where it shows nothing)."""

    jid: str
    pushName: str | None
    about: str | None
    pictureUrl: Annotated[str | None, Field(description="the profile picture's URL; null when none or hidden")]


class BlockChange(Answer):
    """PUT and DELETE /session/{id}/contacts/{jid}/block."""

    jid: str
    blocked: bool


class Blocklist(Answer):
    """GET /session/{id}/blocklist."""

    jids: list[str]


class DisappearingTimer(Answer):
    """PUT /session/{id}/chats/{jid}/disappearing."""

    chat: str
    seconds: Annotated[int, Field(description="the chat's timer: 0 (off), 86400, 604800 or 7776000")]


# -- groups (issue 17) ---------------------------------------------------------------------------
class GroupParticipant(Answer):
    jid: str
    admin: Literal["admin", "superadmin"] | None


class Group(Answer):
    """GET /session/{id}/groups/{groupJid}; also a created or joined group."""

    jid: Annotated[str, Field(examples=["120363025246125486@g.us"])]
    subject: str
    description: str | None
    owner: str | None
    createdAt: Annotated[
        IsoTime | None,
        Field(description="on real WhatsApp (neonize) precise to about ±64 s: it arrives as a float32"),
    ]
    announce: Annotated[bool, Field(description="only admins may send")]
    locked: Annotated[bool, Field(description="only admins may change the subject, description and picture")]
    participants: list[GroupParticipant]


class GroupSummary(Answer):
    jid: str
    subject: str
    size: int
    isAdmin: bool


class GroupList(Answer):
    """GET /session/{id}/groups."""

    groups: list[GroupSummary]


class ParticipantResult(Answer):
    jid: str
    result: Annotated[
        Literal["ok", "invite_required", "not_found", "not_admin", "already", "error"],
        Field(description="error: a code WhatsApp gave that has no name here (see code); never a success"),
    ]
    code: Annotated[
        int,
        Field(description="WhatsApp's code: 200 ok, 401 not_admin, 403 invite_required, 404 not_found, 409 already"),
    ]


class ParticipantResults(Answer):
    """POST /session/{id}/groups/{groupJid}/participants: one result per participant asked for, in order."""

    results: list[ParticipantResult]


class GroupCreated(Answer):
    """POST /session/{id}/groups."""

    group: Group
    results: Annotated[list[ParticipantResult], Field(description="what became of each participant asked for")]


class GroupJoined(Answer):
    """POST /session/{id}/groups/join."""

    group: Group


class GroupInvite(Answer):
    """GET /session/{id}/groups/{groupJid}/invite and POST .../invite/revoke."""

    code: str
    link: Annotated[str, Field(examples=["https://chat.whatsapp.com/F4kS8dKZbGm2zP1vQx9aTe"])]


class GroupDone(Answer):
    """A group change WhatsApp accepted."""

    group: str


# -- the operator's dashboard ---------------------------------------------------------------------------


class ProcessSample(Answer):
    """One sample of a session process: CPU % of one core, memory in bytes."""

    at: IsoTime
    cpuPercent: float
    rss: int
    uss: int


class ProcessSamples(Answer):
    """GET /session/{id}/samples: the last hour of the session process's figures, oldest first."""

    sessionId: str
    interval: Annotated[float, Field(description="seconds between samples (SAMPLE_INTERVAL)")]
    samples: list[ProcessSample]


class ProcessStderr(Answer):
    """GET /session/{id}/stderr: the process's last lines of stderr (its log, a Go panic), oldest first."""

    sessionId: str
    lines: Annotated[list[str], Field(description="at most 40, each cut at 500 characters")]


class SessionStorageFigures(Answer):
    """GET /session/{id}/storage: the session's lease and backup, as this worker knows them."""

    sessionId: str
    lease: Annotated[
        Literal["held", "unverified", "none"] | None,
        Field(description="unverified: running while the object store could not confirm it; null: no storage"),
    ]
    lastBackupAt: Annotated[IsoTime | None, Field(description="the last backup that landed since the worker started")]


class OutboxFigures(Answer):
    """What waits in a session's outbox, and what did not go out."""

    sessionId: str
    pending: Annotated[int, Field(description="messages accepted and waiting in the outbox")]
    oldestPendingAt: IsoTime | None
    unknown: Annotated[int, Field(description="sends a crash left undecided (neonize: never resent)")]
    failed: int


class OutboxPage(OutboxFigures):
    """GET /session/{id}/outbox: the figures, and each waiting message with when and why it waits."""

    messages: list[OutboxEntry]


class SimScanned(Answer):
    """POST /session/{id}/sim/scan."""

    sessionId: str
    phoneNumber: str
    linked: bool


class SimMessageSent(Answer):
    """POST /session/{id}/sim/message."""

    sessionId: str
    phoneNumber: str
    messageId: Annotated[str, Field(description="the id the simulated network gave the message")]
