"""The sessions this worker hosts, one job per module:

- ``registry``: lookup, the commands API routes give, and what routes read (the only door routes use);
- ``status``: a session's status as a pure transition function (events in, effects out);
- ``session``: the record of one hosted session;
- ``proxy``: a session's proxy: accepted URLs, the masked view, sealing it for the database;
- ``child_events``: dispatching what session processes report;
- ``incoming``: received messages and their media, committed before they are acknowledged;
- ``emitter``: session events, queued durably in order;
- ``timers``: heartbeat checks and resource sampling;
- ``snapshot``: the worker's sessions by status and resource totals, for /health, /metrics and heartbeats.
"""

from supervisor.sessions.registry import SessionRegistry
from supervisor.sessions.session import Session, SessionError
from supervisor.sessions.status import SessionStatus

__all__ = ["Session", "SessionError", "SessionRegistry", "SessionStatus"]
