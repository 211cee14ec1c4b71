"""The MinIO backend: the ``minio`` SDK, every blocking call in a worker thread.

Conditional writes: the SDK's ``put_object`` turns unknown headers into user
metadata, so ``If-None-Match``/``If-Match`` cannot go through it. Instead the SDK
presigns the PUT/DELETE (pure computation, the region is configured so no lookup
happens) and aiohttp sends it with the condition header: only the SDK's public
API is used, and the server (MinIO, S3, moto) evaluates the condition atomically.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from supervisor.storage.disposition import content_disposition, content_type_of
from supervisor.storage.objects import (
    ObjectStore,
    PreconditionFailed,
    StorageError,
    StorageUnavailable,
    StoredObject,
)

log = logging.getLogger("supervisor.storage")

T = TypeVar("T")

# Transport failures: the store is down or unreachable, not a wrong request.
_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError, ServerError, InvalidResponseError)
# How long one presigned conditional request stays valid (it is sent at once).
_PRESIGN_CONDITIONAL = timedelta(minutes=5)


class MinioObjectStore(ObjectStore):
    """Objects in MinIO (or any S3 server) through the ``minio`` SDK."""

    kind = "minio"

    def __init__(
        self,
        endpoint: str,
        *,
        access_key: str | None,
        secret_key: str | None,
        secure: bool,
        region: str = "us-east-1",
        timeout: float = 10.0,
        public_url: str | None = None,
    ) -> None:
        super().__init__()
        self.connected = False  # until the first call succeeds
        self.endpoint = endpoint
        self._timeout = timeout
        # Few retries: during an outage a call must fail fast so the caller's backoff takes over.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(3.0, timeout), read=timeout),
            retries=urllib3.Retry(total=1, backoff_factor=0.1, status_forcelist=(502, 503, 504)),
            maxsize=16,
        )
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http
        )
        # Media URLs are signed for the host clients use (the signature covers it). Signing is pure
        # computation with the region given, so this client never opens a connection.
        self._presigner = self.client
        if public_url is not None:
            public = urlsplit(public_url)
            self._presigner = Minio(
                public.netloc,
                access_key=access_key,
                secret_key=secret_key,
                secure=public.scheme == "https",
                region=region,
            )
        self._http: aiohttp.ClientSession | None = None

    # -- plumbing ---------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            result = await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error as exc:
            self.connected = True  # the server answered: it is up
            if exc.code == "NoSuchBucket":
                # A store that lost its buckets (a fresh server) is not set up: the probe creates them again.
                self.needs_setup = True
                raise StorageUnavailable(f"bucket {exc.bucket_name} does not exist (yet)") from None
            raise
        except _UNREACHABLE as exc:
            self._down(exc)
            raise StorageUnavailable(f"MinIO at {self.endpoint} is unreachable: {type(exc).__name__}") from None
        self._up()
        return result

    def _up(self) -> None:
        if not self.connected:
            log.info("MinIO at %s is reachable", self.endpoint)
        self.connected = True

    def _down(self, exc: BaseException) -> None:
        if self.connected:
            log.warning("MinIO at %s is unreachable: %s", self.endpoint, type(exc).__name__)
        self.connected = False

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        return self._http

    async def _conditional(self, method: str, url: str, headers: dict[str, str], data: bytes | None) -> str:
        """Send a presigned request with a condition header; returns the answer's etag."""
        try:
            async with self._session().request(method, url, data=data, headers=headers) as resp:
                body = await resp.read()
                status, etag = resp.status, resp.headers.get("ETag", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._down(exc)
            raise StorageUnavailable(f"MinIO at {self.endpoint} is unreachable: {type(exc).__name__}") from None
        if status >= 500:
            self._down(RuntimeError(str(status)))
            raise StorageUnavailable(f"MinIO at {self.endpoint} answered {status}")
        self._up()
        if status == 404 and b"NoSuchBucket" in body:
            self.needs_setup = True
            raise StorageUnavailable("the bucket does not exist (yet)")
        if status in (412, 409):  # 409: ConditionalRequestConflict, a concurrent conditional write won
            raise PreconditionFailed(f"condition failed ({status})")
        if method == "DELETE" and status == 404:
            return ""
        if status == 404 and "If-Match" in headers:
            raise PreconditionFailed("the object to replace is gone")
        if status >= 300:
            raise StorageError(f"{method} answered {status}: {body[:200]!r}")
        return etag.strip('"')

    # -- the interface -----------------------------------------------------------------
    async def ensure_buckets(self, buckets: list[str]) -> None:
        for bucket in buckets:
            if not await self._call(self.client.bucket_exists, bucket):
                try:
                    await self._call(self.client.make_bucket, bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise StorageError(f"cannot create bucket {bucket}: {exc.code}") from None
                log.info("created bucket %s", bucket)

    async def get(self, bucket: str, key: str) -> StoredObject | None:
        def fetch() -> StoredObject:
            resp = self.client.get_object(bucket, key)
            try:
                return StoredObject(resp.read(), str(resp.headers.get("ETag", "")).strip('"'))
            finally:
                resp.close()
                resp.release_conn()

        try:
            return await self._call(fetch)
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return None
            raise StorageError(f"cannot read {bucket}/{key}: {exc.code}") from None

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
        if if_none_match or if_match is not None:
            url = self.client.presigned_put_object(bucket, key, expires=_PRESIGN_CONDITIONAL)
            headers = {"Content-Type": content_type}
            if if_none_match:
                headers["If-None-Match"] = "*"
            if if_match is not None:
                headers["If-Match"] = f'"{if_match}"'
            return await self._conditional("PUT", url, headers, data)
        try:
            result = await self._call(
                self.client.put_object, bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
        except S3Error as exc:
            raise StorageError(f"cannot write {bucket}/{key}: {exc.code}") from None
        return str(result.etag or "")

    async def put_file(self, bucket: str, key: str, path: Path, *, content_type: str) -> None:
        try:
            await self._call(self.client.fput_object, bucket, key, str(path), content_type=content_type)
        except S3Error as exc:
            raise StorageError(f"cannot write {bucket}/{key}: {exc.code}") from None

    async def delete(self, bucket: str, key: str, *, if_match: str | None = None) -> None:
        if if_match is not None:
            url = self.client.get_presigned_url("DELETE", bucket, key, expires=_PRESIGN_CONDITIONAL)
            await self._conditional("DELETE", url, {"If-Match": f'"{if_match}"'}, None)
            return
        try:
            await self._call(self.client.remove_object, bucket, key)
        except S3Error as exc:
            if exc.code != "NoSuchKey":
                raise StorageError(f"cannot delete {bucket}/{key}: {exc.code}") from None

    async def list(self, bucket: str, prefix: str) -> list[str]:
        def names() -> list[str]:
            return sorted(str(o.object_name) for o in self.client.list_objects(bucket, prefix, recursive=True))

        try:
            return await self._call(names)
        except S3Error as exc:
            raise StorageError(f"cannot list {bucket}/{prefix}: {exc.code}") from None

    async def presigned_get(self, bucket: str, key: str, expiry: float) -> str:
        # S3 answers with these headers for this URL alone: a document is a download, never a page.
        overrides: dict[str, str | list[str] | tuple[str]] = {
            "response-content-disposition": content_disposition(key),
            "response-content-type": content_type_of(key),
        }
        return str(
            self._presigner.presigned_get_object(
                bucket, key, expires=timedelta(seconds=expiry), response_headers=overrides
            )
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
