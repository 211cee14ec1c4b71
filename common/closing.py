"""Closing several things in a row, so that one close that fails neither skips nor hides the others.

Each step's failure is logged once, where it happens, with the caller's context;
the next step runs all the same. ``raise_if_failed`` then raises one
:class:`CloseFailed` naming every step that failed, caused by the first error, so
whoever closes the whole can still tell that something went wrong.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any


class CloseFailed(RuntimeError):
    """One or more closes failed; each was logged where it failed, ``__cause__`` is the first."""

    def __init__(self, failed: list[str]) -> None:
        super().__init__(f"closing failed for: {', '.join(failed)} (each logged above)")
        self.failed = failed


class Closing:
    """The closes of one owner, run to the end whatever fails among them."""

    __slots__ = ("_errors", "_extra", "_log", "failed")

    def __init__(self, logger: logging.Logger, *, extra: Mapping[str, Any] | None = None) -> None:
        self._log = logger
        self._extra = dict(extra or {})
        self._errors: list[BaseException] = []
        self.failed: list[str] = []  # what failed to close, in the order it was tried

    @contextlib.contextmanager
    def step(self, what: str, *, extra: Mapping[str, Any] | None = None) -> Iterator[None]:
        """Close ``what`` in the ``with`` body: a failure is logged (with ``extra`` added to the
        owner's context) and kept, and the caller goes on."""
        try:
            yield
        except Exception as exc:
            if any(exc is seen for seen in self._errors):
                return  # a shared close (e.g. an idempotent shutdown) awaited twice: told once already
            if not isinstance(exc, CloseFailed):  # a nested owner logged each of its own failures
                self._log.error(
                    "closing %s failed; closing the rest", what, exc_info=True, extra={**self._extra, **(extra or {})}
                )
            self._errors.append(exc)
            self.failed.append(what)

    def raise_if_failed(self) -> None:
        """Raise :class:`CloseFailed` (caused by the first error) when any step failed."""
        if self._errors:
            raise CloseFailed(self.failed) from self._errors[0]
