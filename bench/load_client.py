"""The load generator's HTTP client: HTTP/1.1 keep-alive connections on plain asyncio streams.

The bench's clients share the worker's two cores, so what they spend per request is
taken from the worker. aiohttp's client costs about as much CPU per request as the
worker's whole API layer; this one writes a prepared request and reads the answer's
status line, headers and Content-Length body, and nothing else. It speaks only to
the worker's API (no chunked answers, no redirects), which is all the bench needs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class LoadClient:
    """A pool of keep-alive connections to one host, each carrying one request at a time."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """POST a JSON body; the answer's status and body."""
        data = json.dumps(body).encode()
        request = (
            f"POST {path} HTTP/1.1\r\n{self._head}Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        return await self._exchange(request)

    async def get(self, path: str) -> int:
        """GET ``path``; the answer's status (its body is read and dropped)."""
        status, _ = await self._exchange(f"GET {path} HTTP/1.1\r\n{self._head}\r\n".encode())
        return status

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        conn = self._idle.pop() if self._idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        try:
            writer.write(request)
            status, length, close = await _read_head(reader)
            payload = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self._idle.append(conn)
        return status, payload

    async def close(self) -> None:
        """Close the idle connections."""
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
        elif name == "transfer-encoding":
            raise ValueError("chunked answers are not expected from the worker's send endpoint")
    return status, length, close
