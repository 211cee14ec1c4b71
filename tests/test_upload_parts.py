"""Multipart uploads: an empty-named part is ignored, a nameless, unparsable or undecodable one is a 400."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from urllib3 import encode_multipart_formdata

from supervisor.api import openapi, upload
from supervisor.api.bodies import FORM_FIELD_NAME
from supervisor.api.errors import error_middleware, ok

BOUNDARY = "b0undary"


def _body(*parts: tuple[str, bytes]) -> bytes:
    out = b""
    for disposition, content in parts:
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def _post(tmp_path: Path, body: bytes) -> tuple[int, dict[str, object]]:
    async def handler(request: web.Request) -> web.Response:
        received = await upload.receive(request, tmp_path / "upload", max_bytes=1 << 20)
        return ok({"fields": received.fields, "size": received.size})

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/", handler)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/", data=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        return resp.status, await resp.json()


async def test_an_empty_named_part_is_ignored_and_a_nameless_one_refused(tmp_path: Path) -> None:
    file_part = ('form-data; name="file"; filename="a.jpg"', b"\xff\xd8\xff" + b"x" * 10)
    status, answer = await _post(
        tmp_path, _body(('form-data; name=""', b"junk"), ('form-data; name="to"', b"62811"), file_part)
    )
    assert status == 200, answer
    assert answer["data"] == {"fields": {"to": "62811"}, "size": 13}
    status, answer = await _post(tmp_path, _body(("form-data", b"junk"), file_part))
    assert status == 400 and answer["code"] == "INVALID_MULTIPART", answer


async def test_a_part_header_aiohttp_cannot_parse_is_a_400_not_a_500(tmp_path: Path) -> None:
    # A control character in a part's header (found by the API fuzz run on the group picture route)
    # makes aiohttp's part reader raise InvalidHeader, which is neither a ValueError nor ours.
    file_part = ('form-data; name="file"; filename="a.jpg"', b"\xff\xd8\xff" + b"x" * 10)
    bad_header = ('form-data; name="\xdf\x11t[["', b"{}")
    status, answer = await _post(tmp_path, _body(bad_header, file_part))
    assert status == 400 and answer["code"] == "INVALID_MULTIPART", answer
    assert not (tmp_path / "upload").exists()


async def test_a_field_in_an_encoding_that_cannot_be_decoded_is_a_400(tmp_path: Path) -> None:
    file_part = ('form-data; name="file"; filename="a.jpg"', b"\xff\xd8\xff" + b"x" * 10)
    for encoding in ("foo", "base64"):  # unknown to aiohttp; base64 with bad padding
        field = (f'form-data; name="to"\r\nContent-Transfer-Encoding: {encoding}', b"zz!!!")
        status, answer = await _post(tmp_path, _body(field, file_part))
        assert status == 400 and answer["code"] == "INVALID_MULTIPART", (encoding, answer)


async def test_the_document_lets_a_part_name_hold_exactly_what_the_reader_accepts(tmp_path: Path) -> None:
    # The API fuzz run once wrote a schema-valid extra field whose name held a control character: no
    # HTTP header can carry it, so the document's forms must not call such a name valid.
    schemas = openapi.document()["components"]["schemas"]
    for form in ("SendMediaRequest", "GroupPictureForm"):
        assert schemas[form]["propertyNames"] == {"pattern": FORM_FIELD_NAME}
    declared = re.compile(FORM_FIELD_NAME)
    jpeg = ("a.jpg", b"\xff\xd8\xff" + b"x" * 10, "image/jpeg")
    for code in [*range(0x20), 0x7F]:
        name = f"a{chr(code)}b"
        # As a form encoder writes it (line breaks and quotes escaped), which is what the fuzzer sends.
        body, _ = encode_multipart_formdata({name: "x", "file": jpeg}, boundary=BOUNDARY)
        status, answer = await _post(tmp_path, body)
        assert (status == 200) == bool(declared.fullmatch(name)), (hex(code), answer)
