"""The filesystem backend: each bucket is a directory, each object a file (no external service).

Writes are atomic (temp file + rename) so a crash never leaves half an object.
Conditional writes are serialised by a lock: one worker owns its STORAGE_DIR
(the worker's lock file), so in-process serialisation is enough. Presigned URLs
point at the worker's own ``/media/...`` route and carry an HMAC signature and
an expiry.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from supervisor.storage.objects import ObjectStore, PreconditionFailed, StorageError, StoredObject


def url_signature(secret: bytes, bucket: str, key: str, expires: int) -> str:
    """The signature of a local presigned URL (hex HMAC-SHA256 over bucket, key and expiry)."""
    message = f"{bucket}\n{key}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def check_signature(secret: bytes, bucket: str, key: str, expires: str, signature: str) -> bool:
    """True when a presigned URL's signature matches and it has not expired."""
    try:
        until = int(expires)
    except ValueError:
        return False
    if until < time.time():
        return False
    return hmac.compare_digest(url_signature(secret, bucket, key, until), signature)


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LocalObjectStore(ObjectStore):
    """Objects as files under one directory per bucket."""

    kind = "local"

    def __init__(self, roots: dict[str, Path], *, url_base: str, url_secret: bytes) -> None:
        super().__init__()
        self.roots = roots
        self.url_base = url_base.rstrip("/")
        self.url_secret = url_secret
        self._lock = asyncio.Lock()

    def path_of(self, bucket: str, key: str) -> Path:
        """The file holding ``key``; keys never escape their bucket's directory."""
        root = self.roots.get(bucket)
        if root is None:
            raise StorageError(f"unknown bucket {bucket!r}")
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"invalid object key {key!r}")
        return root.joinpath(*parts)

    async def ensure_buckets(self, buckets: list[str]) -> None:
        for bucket in buckets:
            await asyncio.to_thread(self.roots[bucket].mkdir, parents=True, exist_ok=True)

    async def get(self, bucket: str, key: str) -> StoredObject | None:
        path = self.path_of(bucket, key)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        return StoredObject(data, _etag(data))

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
        path = self.path_of(bucket, key)
        async with self._lock:
            if if_none_match or if_match is not None:
                current = await self.get(bucket, key)
                if if_none_match and current is not None:
                    raise PreconditionFailed(f"{key} exists")
                if if_match is not None and (current is None or current.etag != if_match):
                    raise PreconditionFailed(f"{key} changed")
            await asyncio.to_thread(write_atomic, path, data)
        return _etag(data)

    async def put_file(self, bucket: str, key: str, path: Path, *, content_type: str) -> None:
        target = self.path_of(bucket, key)
        await asyncio.to_thread(_copy_atomic, path, target)

    async def delete(self, bucket: str, key: str, *, if_match: str | None = None) -> None:
        path = self.path_of(bucket, key)
        async with self._lock:
            if if_match is not None:
                current = await self.get(bucket, key)
                if current is None:
                    return
                if current.etag != if_match:
                    raise PreconditionFailed(f"{key} changed")
            await asyncio.to_thread(path.unlink, True)

    async def list(self, bucket: str, prefix: str) -> list[str]:
        root = self.roots[bucket]

        # Walk only the prefix's directory: the media bucket's root is the storage dir itself.
        base = root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else root

        def walk() -> list[str]:
            if not base.is_dir():
                return []
            keys = (p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file())
            return sorted(k for k in keys if k.startswith(prefix) and ".tmp-" not in k)

        return await asyncio.to_thread(walk)

    async def presigned_get(self, bucket: str, key: str, expiry: float) -> str:
        self.path_of(bucket, key)  # validates the key
        expires = int(time.time() + expiry)
        query = urlencode({"expires": expires, "signature": url_signature(self.url_secret, bucket, key, expires)})
        return f"{self.url_base}/media/{quote(bucket)}/{quote(key)}?{query}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file whole or not at all (a temporary file, fsynced, renamed over it); blocking."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
