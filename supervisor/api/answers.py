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
    status: Literal["pending", "sent", "failed", "unknown"]
    timestamp: Annotated[IsoTime | None, Field(description="when it was sent (null while pending)")]
    error: Annotated[str | None, Field(description="why it failed")] = None
    mediaUrl: Annotated[str | None, Field(description="a media send's stored file")] = None


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
    mediaError: Annotated[
        Literal["too_large", "download_failed"] | None,
        Field(
            description="a received media message kept without its media: over MAX_INCOMING_MEDIA_MB"
            " (never downloaded), or the download failed"
        ),
    ] = None


class Pagination(Answer):
    total: int
    limit: int
    offset: int


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


class Metrics(Answer):
    """GET /metrics as JSON (not wrapped in an envelope)."""

    worker: WorkerFigures
    sessions: SessionFigures
    messages: MessageFigures
    eventConsumers: list[EventConsumerFigures]
    performance: Performance
    database: DatabaseFigures
    storage: StorageHealth | None
    timestamp: IsoTime


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
    """GET /session/{id}/outbox: what waits to be sent, and what did not go out."""

    sessionId: str
    pending: Annotated[int, Field(description="messages accepted and waiting in the outbox")]
    oldestPendingAt: IsoTime | None
    unknown: Annotated[int, Field(description="sends a crash left undecided (neonize: never resent)")]
    failed: int


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
