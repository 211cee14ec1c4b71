"""A session's own settings (``PUT /session/{id}/settings``), stored with the session.

One record per session, kept as JSON in ``session_settings`` so that a setting is added by adding
a field here (with its default) and to the request body: a stored record without it reads as the
default, and a stored key this version does not know is kept as it is (a newer worker's setting
survives an older one's write). Per-session pacing (issue 20) belongs here too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# API field name → record field; every setting a client may read and change.
FIELDS = {"rejectCalls": "reject_calls"}


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a session does on its own; defaults for a session nobody configured."""

    reject_calls: bool = False  # the session process declines every incoming call itself
    unknown: dict[str, Any] = dataclasses.field(default_factory=dict)  # stored keys of a newer version

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> SessionSettings:
        """The record as stored; a missing or mistyped value reads as its default."""
        values: dict[str, Any] = {}
        for name, attr in FIELDS.items():
            default = getattr(cls(), attr)
            value = data.get(name, default)
            values[attr] = value if type(value) is type(default) else default
        return cls(**values, unknown={k: v for k, v in data.items() if k not in FIELDS})

    def stored(self) -> dict[str, Any]:
        """The record as stored (the API's field names)."""
        return {**self.unknown, **self.view()}

    def view(self) -> dict[str, Any]:
        """The settings as answers show them."""
        return {name: getattr(self, attr) for name, attr in FIELDS.items()}

    def changed(self, changes: dict[str, Any]) -> SessionSettings:
        """These settings with ``changes`` (API field names; a field left out keeps its value)."""
        return dataclasses.replace(self, **{FIELDS[name]: value for name, value in changes.items()})
