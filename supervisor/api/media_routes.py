"""``GET /media/{bucket}/{key}``: the local backend's presigned media URLs, served by the worker.

With MinIO, presigned URLs point at MinIO itself and this route is unused. The
URL's HMAC signature and expiry are its authentication (no worker token), so a
link in an API answer works for whoever holds it, until it expires.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from supervisor.api import bodies
from supervisor.api import validation as v
from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError
from supervisor.api.keys import STORAGE
from supervisor.api.operations import Reply, operation
from supervisor.storage.disposition import content_disposition, content_type_of
from supervisor.storage.local import LocalObjectStore, check_signature
from supervisor.storage.objects import StorageError

routes = web.RouteTableDef()


@operation(
    routes,
    "GET",
    "/media/{bucket}/{key:.+}",
    id="getMedia",
    tag="messages",
    open=True,
    summary="A stored media file, by the presigned URL an answer gave (local storage only; no credentials: "
    "the URL's signature and expiry authenticate it)",
    path_params=bodies.MediaPath,
    query=bodies.MediaQuery,
    errors=(400, 403, 404),
    ok=Reply(
        "the file, with its own type (image/jpeg, audio/ogg, ...)",
        {"*/*": {"type": "string", "format": "binary"}},
        enveloped=False,
    ),
)
async def media(request: web.Request) -> web.StreamResponse:
    storage = request.app.get(STORAGE)
    if storage is None or not isinstance(storage.objects, LocalObjectStore):
        raise ApiError(404, ErrorCode.NOT_FOUND, "media is served by object storage, not by this worker")
    objects = storage.objects
    bucket, key = request.match_info["bucket"], request.match_info["key"]
    asked = v.query(request, bodies.MediaQuery)
    expires, signature = asked.expires, asked.signature
    if bucket != storage.media_bucket or not check_signature(objects.url_secret, bucket, key, expires, signature):
        raise ApiError(403, ErrorCode.FORBIDDEN, "the media URL is invalid or has expired")
    try:
        path = objects.path_of(bucket, key)
    except StorageError:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such media") from None
    if not await asyncio.to_thread(path.is_file):
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such media")
    headers = {
        "Content-Type": content_type_of(path.name),
        "Content-Disposition": content_disposition(path.name),
        # The type is ours to say: a browser must not guess HTML from a contact's bytes.
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=60",
    }
    return web.FileResponse(path, headers=headers)
