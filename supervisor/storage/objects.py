"""The object-store interface both storage backends serve (MinIO and the local filesystem).

Everything is async: the MinIO SDK is blocking and runs in worker threads, so the
supervisor's event loop never waits on the network. Conditional writes
(``If-None-Match: *`` / ``If-Match: <etag>``) are part of the interface because
leases depend on them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


class StorageError(Exception):
    """An object-store operation failed."""


class StorageUnavailable(StorageError):
    """The object store cannot be reached (connection refused, timeout, 5xx): retry later."""


class PreconditionFailed(StorageError):
    """A conditional write or delete lost: the object changed (or exists) since it was read."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object's bytes and the etag a conditional write compares against."""

    data: bytes
    etag: str


class ObjectStore(ABC):
    """Buckets of objects addressed by key; the storage layer's only view of MinIO or the disk."""

    kind: str = "abstract"

    def __init__(self) -> None:
        self.connected = True
        self.needs_setup = False  # a bucket went missing: ensure_buckets again

    @abstractmethod
    async def ensure_buckets(self, buckets: list[str]) -> None:
        """Create the buckets that are missing; raises StorageUnavailable when the store is down."""

    @abstractmethod
    async def get(self, bucket: str, key: str) -> StoredObject | None:
        """The object, or None when it does not exist."""

    @abstractmethod
    async def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        """Write an object whole; returns its etag. Conditional when asked (raises PreconditionFailed)."""

    @abstractmethod
    async def put_file(self, bucket: str, key: str, path: Path, *, content_type: str) -> None:
        """Upload a file, streamed from disk (media can be large)."""

    @abstractmethod
    async def delete(self, bucket: str, key: str, *, if_match: str | None = None) -> None:
        """Delete an object (missing is fine); conditional on its etag when ``if_match`` is given."""

    @abstractmethod
    async def list(self, bucket: str, prefix: str) -> list[str]:
        """Keys under ``prefix``, recursively, sorted."""

    @abstractmethod
    async def presigned_get(self, bucket: str, key: str, expiry: float) -> str:
        """A URL anyone can GET the object with until ``expiry`` seconds from now."""

    async def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many."""
        keys = await self.list(bucket, prefix)
        for key in keys:
            await self.delete(bucket, key)
        return len(keys)

    async def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to release
        """Release connections."""
