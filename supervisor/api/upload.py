"""Multipart media uploads for POST /send, streamed to disk chunk by chunk.

The supervisor never holds a whole upload in memory: each chunk goes to a file
as it arrives (through a thread: the event loop never waits on the disk), and
the upload stops with 413 as soon as it passes MAX_UPLOAD_MB. The bytes must
look like what the message type declares (sniffed with ``filetype``).
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import filetype
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from supervisor.api.codes import ErrorCode
from supervisor.api.errors import ApiError

CHUNK = 256 * 1024
MAX_FIELD = 64 * 1024
# A send form has a handful of parts (file, type, to, caption, ...). Bounding their number and each
# field's size bounds the whole body, with a Content-Length or chunked: the file is capped on its own.
MAX_PARTS = 32
FILE_PARTS = ("file", "media")
# What a declared type's bytes must sniff as; a document may be anything.
TYPE_FAMILIES = {"image": "image/", "audio": "audio/", "video": "video/"}
STICKER_MIMETYPE = "image/webp"
# What aiohttp's multipart reader raises for a body it cannot parse (a part header with a control
# character is a BadHttpMessage, not a ValueError): the client's fault, so a 400, never a 500.
MALFORMED = (ValueError, AssertionError, BadHttpMessage)


@dataclass(slots=True)
class Upload:
    """A received media file and the form's other fields."""

    path: Path
    size: int
    sha256: str
    mimetype: str
    filename: str | None
    fields: dict[str, str]


def _write(f: IO[bytes], digest: Any, data: bytes) -> None:
    digest.update(data)
    f.write(data)


async def receive(request: web.Request, target: Path, *, max_bytes: int) -> Upload:
    """Stream a multipart/form-data upload into ``target``; raise ApiError (400/413/415) on bad input."""
    if request.content_type != "multipart/form-data":
        raise ApiError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send media as multipart/form-data")
    if request.content_length is not None and request.content_length > max_bytes + MAX_FIELD * 8:
        raise ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"the upload is larger than {max_bytes // (1024 * 1024)} MB")
    try:
        reader = await request.multipart()
    except MALFORMED as exc:
        raise _malformed(exc) from None
    fields: dict[str, str] = {}
    got_file: tuple[int, str, str | None, str | None] | None = None
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    parts = 0
    try:
        while True:
            try:
                part = await reader.next()
            except MALFORMED as exc:
                raise _malformed(exc) from None
            if part is None:
                break
            parts += 1
            if parts > MAX_PARTS:
                raise ApiError(400, ErrorCode.INVALID_MULTIPART, f"a send form has at most {MAX_PARTS} parts")
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, ErrorCode.INVALID_MULTIPART, "nested multipart bodies are not accepted")
            if part.name in FILE_PARTS and part.filename is not None:
                if got_file is not None:
                    raise ApiError(400, ErrorCode.INVALID_MULTIPART, "send exactly one file part")
                size, digest = await _stream(part, target, max_bytes)
                got_file = (size, digest, part.filename, part.headers.get("Content-Type"))
            elif part.name:
                fields[part.name] = (await _read_field(part)).decode("utf-8", "replace")
            elif part.name == "":
                # An empty name (name="") names no field this API has: read (bounded) and ignored, like
                # any other field it does not know.
                await _read_field(part)
            else:
                # Skipping it would still read it through: refused before a byte of it is read.
                raise ApiError(400, ErrorCode.INVALID_MULTIPART, "every form part needs a name")
    except BaseException:
        await asyncio.to_thread(target.unlink, True)
        raise
    if got_file is None:
        raise ApiError(400, ErrorCode.MEDIA_MISSING, "a media message needs a file part named 'file'")
    size, digest, filename, declared = got_file
    if size == 0:
        await asyncio.to_thread(target.unlink, True)
        raise ApiError(400, ErrorCode.MEDIA_MISSING, "the file part is empty")
    return Upload(target, size, digest, _mimetype(target, filename, declared), filename, fields)


def _malformed(exc: Exception) -> ApiError:
    # aiohttp's header errors quote the raw header bytes over several lines: say which part of the body is bad.
    what = "a part's headers cannot be read" if isinstance(exc, BadHttpMessage) else str(exc)
    return ApiError(400, ErrorCode.INVALID_MULTIPART, f"malformed multipart body: {what}")


async def _read_field(part: BodyPartReader) -> bytes:
    """A form field's value, read no further than MAX_FIELD (never the whole part into memory first)."""
    data = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        data += chunk
        if len(data) > MAX_FIELD:
            raise ApiError(400, ErrorCode.INVALID_FIELD, f"form field {part.name} is longer than {MAX_FIELD} bytes")
    try:
        return part.decode(bytes(data))
    except (RuntimeError, ValueError):
        # aiohttp raises RuntimeError for a transfer encoding it does not know, binascii.Error (a ValueError)
        # for bad base64: the client's body, so a 400.
        raise ApiError(
            400, ErrorCode.INVALID_MULTIPART, f"form field {part.name} cannot be decoded as its headers declare"
        ) from None


async def _stream(part: BodyPartReader, target: Path, max_bytes: int) -> tuple[int, str]:
    size = 0
    digest = hashlib.sha256()
    f = await asyncio.to_thread(open, target, "wb")
    try:
        while chunk := await part.read_chunk(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(
                    413, ErrorCode.PAYLOAD_TOO_LARGE, f"the file is larger than {max_bytes // (1024 * 1024)} MB"
                )
            await asyncio.to_thread(_write, f, digest, chunk)
        # On disk before the message is accepted: the outbox may hand it to a process after a crash.
        await asyncio.to_thread(os.fsync, f.fileno())
    finally:
        await asyncio.to_thread(f.close)
    return size, digest.hexdigest()


def _mimetype(path: Path, filename: str | None, declared: str | None) -> str:
    sniffed = filetype.guess_mime(str(path))
    if sniffed:
        return str(sniffed)
    if declared and declared != "application/octet-stream":
        return declared
    guessed = mimetypes.guess_type(filename or "")[0]
    return guessed or "application/octet-stream"


def check_type(upload: Upload, kind: str) -> None:
    """Refuse (415) bytes that do not look like the declared message type."""
    if kind == "sticker":
        _check_sticker(upload)
        return
    family = TYPE_FAMILIES.get(kind)
    if family is None:
        return
    sniffed: Any = filetype.guess_mime(str(upload.path))
    if not (isinstance(sniffed, str) and sniffed.startswith(family)):
        raise ApiError(
            415,
            ErrorCode.MEDIA_TYPE_MISMATCH,
            f"the file is {sniffed or 'of an unknown type'}, not {family.rstrip('/')}",
        )


def _check_sticker(upload: Upload) -> None:
    # WhatsApp stickers are WebP; the bytes decide, whatever the part's Content-Type or file name says.
    sniffed: Any = filetype.guess_mime(str(upload.path))
    if sniffed != STICKER_MIMETYPE:
        raise ApiError(
            415,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"a sticker must be WebP; the file is {sniffed or 'of an unknown type'}",
        )
    upload.mimetype = STICKER_MIMETYPE
