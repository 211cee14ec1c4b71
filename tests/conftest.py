"""Suite-wide: the strict wire contract, and every answer a test receives from the API checked against
its OpenAPI document."""

from __future__ import annotations

import os
from collections.abc import Iterator

import contract
import pytest
from aiohttp import test_utils

from supervisor.api.errors import error_middleware

# Strict wire contract (transport/wire.py): a protocol error is raised where it is received, in this
# process and in every worker and session process the tests start (they inherit the environment).
os.environ["WA_WIRE_STRICT"] = "1"


def pytest_configure(config: pytest.Config) -> None:
    contract.install()
    original = test_utils.TestServer.start_server

    async def start_server(self: test_utils.TestServer, **kwargs: object) -> None:
        await original(self, **kwargs)  # type: ignore[arg-type]
        # An app with the API's own description serves the whole API; a test app with the API's error
        # middleware answers its errors; other test servers (the sim hub's HTTP API, fakes) are not the API.
        whole = any(
            r.resource is not None and r.resource.canonical == "/openapi.json" for r in self.app.router.routes()
        )
        if whole or error_middleware in self.app.middlewares:
            contract.watch(str(self.make_url("")), whole_api=whole)

    test_utils.TestServer.start_server = start_server  # type: ignore[method-assign,assignment]


@pytest.fixture(autouse=True)
def api_contract() -> Iterator[None]:
    """Fail the test when an answer it received does not match GET /openapi.json."""
    contract.WATCH.take()
    yield
    problems = contract.check_all(contract.WATCH.take())
    # The test's servers are gone: a later test's server (a sim hub, a fake) may get one of their ports.
    contract.WATCH.origins.clear()
    if problems:
        pytest.fail(contract.failure(problems), pytrace=False)
