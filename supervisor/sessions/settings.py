"""A session's own settings (``PUT /session/{id}/settings``), stored with the session.

One record per session, kept as JSON in ``session_settings`` so that a setting is added by adding
a field here (with its default) and to the request body: a stored record without it reads as the
default, and a stored key this version does not know is kept as it is (a newer worker's setting
survives an older one's write). ``pacing`` holds the session's own pace (README "Paced sending").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from supervisor.messaging import pacing

# API field name → record field; every setting a client may read and change.
FIELDS = {"rejectCalls": "reject_calls", "pacing": "pacing"}


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a session does on its own; defaults for a session nobody configured."""

    reject_calls: bool = False  # the session process declines every incoming call itself
    # The session's own pace (API names of supervisor/messaging/pacing.py's SETTINGS); a setting left
    # out follows the worker's PACING_* defaults.
    pacing: dict[str, Any] = dataclasses.field(default_factory=dict)
    unknown: dict[str, Any] = dataclasses.field(default_factory=dict)  # stored keys of a newer version

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> SessionSettings:
        """The record as stored; a missing or mistyped value reads as its default."""
        values: dict[str, Any] = {}
        for name, attr in FIELDS.items():
            default = getattr(cls(), attr)
            value = data.get(name, default)
            values[attr] = value if type(value) is type(default) else default
        # Only pacing settings this version knows, with a number or true/false (a stored record is trusted
        # no more than a request).
        values["pacing"] = {
            k: v for k, v in values["pacing"].items() if k in pacing.SETTINGS and isinstance(v, int | float | bool)
        }
        return cls(**values, unknown={k: v for k, v in data.items() if k not in FIELDS})

    def stored(self) -> dict[str, Any]:
        """The record as stored (the API's field names)."""
        return {**self.unknown, **self.view()}

    def view(self) -> dict[str, Any]:
        """The settings as answers show them."""
        return {name: getattr(self, attr) for name, attr in FIELDS.items()}

    def changed(self, changes: dict[str, Any]) -> SessionSettings:
        """These settings with ``changes`` (API field names; a field left out keeps its value). Pacing
        settings change one by one; null puts one back to the worker's default."""
        values = {FIELDS[name]: value for name, value in changes.items()}
        if "pacing" in values:
            merged = {**self.pacing, **values["pacing"]}
            values["pacing"] = {name: value for name, value in merged.items() if value is not None}
        return dataclasses.replace(self, **values)
