"""Schema-driven testing: schemathesis generates requests from the worker's own ``/openapi.json``
(valid and invalid bodies, queries, headers, ids; stateful sequences along the document's links)
against a real worker, with every check (server errors, status codes, content types, headers,
response schemas, valid requests accepted, invalid ones refused, SSE events) and every phase
(examples, coverage, fuzzing, stateful). The worker must be healthy afterwards. Bounded (few
examples per operation) so it stays around a minute on two cores."""

from __future__ import annotations

import asyncio
import string
import sys
from pathlib import Path, PurePosixPath

from harness import TOKEN, Worker, running_worker
from hypothesis import example, given, settings
from hypothesis import strategies as st

from supervisor.api import bodies
from supervisor.api import validation as v
from supervisor.api.errors import ApiError

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = Path(__file__).with_name("schemathesis.toml")
STREAM = "/events/stream"


async def _schemathesis(w: Worker, workdir: Path, *args: str) -> str:
    """Run schemathesis against ``w`` with every check; fail the test with its report unless it passes."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{w.url}/openapi.json",
        "--header",
        f"X-Worker-Token: {TOKEN}",
        "--checks",
        "all",
        "--workers",
        "1",
        "--seed",
        "20261129",
        "--suppress-health-check",
        "all",
        "--no-color",
        "--generation-database",
        "none",
        *args,
        cwd=workdir,  # schemathesis keeps a .schemathesis/ cache in its working directory
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-8000:]
    assert "generated" in report and "passed" in report, report[-2000:]
    return report


async def test_generated_requests_get_the_answers_the_document_declares(tmp_path: Path) -> None:
    async with running_worker(
        tmp_path / "w",
        CREATE_QR_WAIT="0",  # create answers at once: the fuzzer makes many
        # bounds how many session processes the fuzzer can start
        RATE_LIMIT_SESSION_OPS="40",
        RATE_LIMIT_SESSION_OPS_BURST="40",
        # Which webhook hosts are refused is a run-time rule no schema pattern can say (`http://0/` matches
        # the URL's pattern); the refusal has tests of its own (tests/test_webhook_destinations.py).
        WEBHOOK_ALLOW_PRIVATE="true",
    ) as w:
        await _schemathesis(
            w,
            tmp_path / "api",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "15",
            "--request-timeout",
            "30",
            # An SSE stream never ends by design: it has a run of its own below, with a short timeout.
            "--exclude-path",
            STREAM,
        )
        # The stream, once the run above has filled the event log: each case reads the events that
        # come within the timeout (a replay from the start), and each event is checked against the schema.
        await _schemathesis(
            w,
            tmp_path / "stream",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "3",
            "--request-timeout",
            "1",
            "--include-path",
            STREAM,
        )

        # still healthy, nothing unhandled in its log, and every process it started still supervised
        status, health = await w.api("GET", "/health")
        assert status == 200 and health["status"] == "healthy", health
        assert "unhandled error" not in w.log()
        status, body = await w.api("GET", "/sessions")
        assert status == 200
        for session in body["data"]["sessions"]:
            assert session["status"] != "failed", session


# -- the validators themselves, property-based (in process, fast) ------------------------------------

SAFE_ID_CHARS = set(string.ascii_letters + string.digits + "._-")
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=80) | st.text(max_size=80)


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT | st.from_regex(bodies.SESSION_ID_PATTERN).map(lambda s: s + "\n"))
@example("abc\n")
@example("..")
def test_an_accepted_session_id_is_one_plain_file_name(value: str) -> None:
    try:
        accepted = v.session_id(value)
    except ApiError as exc:
        assert exc.status == 400 and exc.code == "INVALID_SESSION_ID"
        return
    # It becomes STORAGE_DIR/sessions/<id> and object names: nothing may escape or hide.
    assert accepted == value and 1 <= len(accepted) <= 64
    assert set(accepted) <= SAFE_ID_CHARS  # no newline, space, separator or control character
    assert "/" not in accepted and "\\" not in accepted and "\x00" not in accepted
    assert accepted not in (".", "..") and not accepted.startswith(".")
    base = PurePosixPath("/data/sessions")
    assert (base / accepted).parent == base


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT | st.integers() | st.none() | st.lists(st.text(max_size=5), max_size=3))
def test_a_phone_target_is_a_jid_or_a_400(value: object) -> None:
    try:
        jid = v.phone_target(value)
    except ApiError as exc:
        assert exc.status == 400 and exc.code == "INVALID_TARGET"
        return
    user, _, server = jid.partition("@")
    assert server in ("s.whatsapp.net", "g.us")
    assert user.replace("-", "").isdigit() and user.isascii()


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT | st.integers() | st.none())
def test_a_pairing_number_is_digits_or_a_400(value: object) -> None:
    try:
        digits = v.phone_digits(value)
    except ApiError as exc:
        assert exc.status == 400 and exc.code == "INVALID_PHONE"
        return
    assert digits.isascii() and digits.isdigit() and 5 <= len(digits) <= 20


def test_a_multipart_send_reads_an_empty_or_null_mentions_field_as_none() -> None:
    """A form field cannot be null: the document's nullable mentions arrive as "" or "null"."""
    fields = {"type": "image", "to": "628123456789"}
    for none in ("", "null", " null "):
        assert v.parse(bodies.SendMediaRequest, {**fields, "mentions": none}).mentions is None
    given = v.parse(bodies.SendMediaRequest, {**fields, "mentions": '["628123456789"]'})
    assert given.mentions == ["628123456789@s.whatsapp.net"]
    try:
        v.parse(bodies.SendMediaRequest, {**fields, "mentions": "[1"})
    except ApiError as exc:
        assert exc.status == 400
    else:
        raise AssertionError("a broken JSON array was accepted")
