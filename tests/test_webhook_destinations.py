"""Where webhooks may go: the URL check when one is set, and the check at every connection.

The connection checks run through the real HTTP client webhooks use (supervisor.events.destinations
.webhook_client) against a real receiver on loopback; name lookups are answered by an injected
resolver (no real DNS here), so a name can resolve public once and private the next time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from harness import free_port, wait_for, webhook_receiver
from hypothesis import given
from hypothesis import strategies as st

from supervisor.database.store import Store
from supervisor.events.delivery import failure_category
from supervisor.events.destinations import (
    PublicResolver,
    RefusedDestination,
    refused_address,
    refused_host,
    refused_url,
    webhook_client,
)
from supervisor.events.log import EventLog
from supervisor.events.webhooks import Webhooks

# Each: a webhook URL an API client might send, and whether it must be refused when set.
URLS: list[tuple[str, bool]] = [
    ("https://hooks.example.com/wa", False),
    ("http://8.8.8.8/hook", False),
    ("http://[2606:4700:4700::1111]/hook", False),
    ("http://user:pass@hooks.example.com/x", False),
    ("http://hooks.example.com:8080/x?y=1#z", False),
    ("http://deadbeef.example/", False),  # hex-looking labels are still a name
    ("http://127.0.0.1:8080/hook", True),
    ("http://127.1.2.3/", True),
    ("http://localhost/", True),
    ("http://LOCALHOST./", True),
    ("http://api.localhost/", True),
    ("http://localhost.localdomain/", True),
    ("http://ip6-localhost/", True),
    ("http://0.0.0.0/", True),
    ("http://0/", True),
    ("http://[::]/", True),
    ("http://[::1]/", True),
    ("http://10.0.0.1/", True),
    ("http://172.16.5.4/", True),
    ("http://192.168.1.1/", True),
    ("http://100.64.0.1/", True),  # carrier-grade NAT, shared
    ("http://169.254.169.254/latest/meta-data/", True),  # cloud metadata
    ("http://224.0.0.1/", True),
    ("http://239.255.255.250:1900/", True),
    ("http://255.255.255.255/", True),
    ("http://240.0.0.1/", True),
    ("http://192.0.2.1/", True),  # documentation
    ("http://[fc00::1]/", True),
    ("http://[fd12:3456::1]/", True),
    ("http://[fe80::1]/", True),
    ("http://[ff02::1]/", True),
    ("http://[::ffff:127.0.0.1]/", True),
    ("http://[::ffff:7f00:1]/", True),
    ("http://[::ffff:169.254.169.254]/", True),
    ("http://[::ffff:10.0.0.1]/", True),
    ("http://[::127.0.0.1]/", True),  # IPv4-compatible, deprecated: reserved
    ("http://[64:ff9b::7f00:1]/", True),  # NAT64 of 127.0.0.1
    ("http://[2002:7f00:1::1]/", True),  # 6to4 of 127.0.0.1
    ("http://[2002:a9fe:a9fe::1]/", True),  # 6to4 of 169.254.169.254
    ("http://2130706433/", True),  # 127.0.0.1 as one number
    ("http://0x7f000001/", True),
    ("http://0x7f.1/", True),
    ("http://017700000001/", True),  # octal
    ("http://0177.0.0.1/", True),
    ("http://127.1/", True),
    ("http://134744072/", True),  # 8.8.8.8, but not in the dotted form: what is reached must be what is read
    ("http://example.com@127.0.0.1/", True),  # userinfo: the host is after the @
    ("http://example.com:80@169.254.169.254/", True),
]


@pytest.mark.parametrize(("url", "refused"), URLS)
def test_webhook_urls_are_checked_when_set(url: str, refused: bool) -> None:
    assert (refused_url(url) is not None) == refused, refused_url(url)


ANY_V4 = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)
ANY_V6 = st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address)
REFUSED_NETS = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
]


@st.composite
def refused_ips(draw: st.DrawFn) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    net = draw(st.sampled_from(REFUSED_NETS))
    offset = draw(st.integers(min_value=0, max_value=net.num_addresses - 1))
    return net[offset]


@given(refused_ips())
def test_every_address_of_the_refused_ranges_is_refused_in_every_spelling(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assert refused_address(address)
    if isinstance(address, ipaddress.IPv4Address):
        mapped = ipaddress.IPv6Address(f"::ffff:{address}")
        spellings = [str(address), str(int(address)), hex(int(address)), f"[{mapped}]", f"[::ffff:{address}]"]
    else:
        spellings = [f"[{address}]", f"[{address.exploded}]"]
    for host in spellings:
        assert refused_url(f"http://{host}:8080/hook") is not None, host
        assert refused_url(f"http://public.example@{host}/") is not None, host


@given(ANY_V4)
def test_an_ipv4_address_and_its_mapped_ipv6_form_get_one_verdict(address: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert refused_address(address) == refused_address(mapped)
    assert (refused_url(f"http://{address}/") is None) == (refused_url(f"http://[{mapped}]/") is None)


@given(st.one_of(ANY_V4, ANY_V6))
def test_the_url_check_and_the_connection_check_agree(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    assert (refused_url(f"https://{host}/") is not None) == refused_address(address)
    resolver = PublicResolver(FakeDNS({"hooks.example": [str(address)]}))
    refused = False
    try:
        asyncio.run(resolver.resolve("hooks.example", 443))
    except RefusedDestination:
        refused = True
    assert refused == refused_address(address)


@given(st.text(alphabet="0123456789abcdefx.", min_size=1, max_size=20))
def test_numeric_looking_hosts_are_read_as_the_address_a_resolver_would_make_of_them(host: str) -> None:
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return  # a name: judged when resolved
    verdict = refused_host(host)
    if str(ipaddress.IPv4Address(packed)) != host:
        assert verdict is not None  # only the dotted form is accepted
    else:
        assert (verdict is not None) == refused_address(ipaddress.IPv4Address(packed))


class FakeDNS(AbstractResolver):
    """Answers chosen names with chosen addresses; each answer list is used in turn, the last one sticks."""

    def __init__(self, answers: dict[str, list[str]], *then: dict[str, list[str]]) -> None:
        self.rounds = [answers, *then]
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        answers = self.rounds[0] if len(self.rounds) == 1 else self.rounds.pop(0)
        if host not in answers:
            raise OSError(socket.EAI_NONAME, "no such name")
        return [
            {
                "hostname": host,
                "host": a,
                "port": port,
                "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for a in answers[host]
        ]

    async def close(self) -> None:
        pass


async def test_a_name_that_turns_private_is_refused_when_it_does() -> None:
    dns = FakeDNS(
        {"hooks.example": ["8.8.8.8", "127.0.0.1"]},  # public and private mixed: only the public one is kept
        {"hooks.example": ["127.0.0.1"]},  # rebound
        {"hooks.example": ["::1", "169.254.169.254", "::ffff:10.0.0.1", "fe80::1%1"]},
    )
    resolver = PublicResolver(dns)
    first = await resolver.resolve("hooks.example", 80)
    assert [r["host"] for r in first] == ["8.8.8.8"]
    for _ in range(2):
        with pytest.raises(RefusedDestination):
            await resolver.resolve("hooks.example", 80)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[int, list[str]]]:
    async with webhook_receiver() as heard:
        yield heard


async def _post(http: aiohttp.ClientSession, url: str) -> int:
    async with http.post(url, json={"event": "probe"}, allow_redirects=False) as resp:
        return resp.status


async def test_the_webhook_client_connects_to_public_addresses_only(receiver: tuple[int, list[str]]) -> None:
    port, got = receiver
    dns = FakeDNS({"hooks.example": ["127.0.0.1"], "v6.example": ["::1"]})
    # Allowed (development): the injected answer is what is connected to, so the refusals below are real.
    async with webhook_client(allow_private=True, resolver=dns) as http:
        assert await _post(http, f"http://hooks.example:{port}/hook") == 204
    assert got == ["probe"]
    async with webhook_client(allow_private=False, resolver=dns) as http:
        for url in (
            f"http://hooks.example:{port}/hook",  # a name resolving to loopback
            f"http://127.0.0.1:{port}/hook",  # a literal: aiohttp asks no resolver, the socket check refuses it
            f"http://[::ffff:127.0.0.1]:{port}/hook",
            f"http://v6.example:{port}/hook",
        ):
            with pytest.raises(aiohttp.ClientConnectorError) as raised:
                await _post(http, url)
            assert failure_category(raised.value) == "refused_address", url
    assert got == ["probe"]


async def test_webhook_delivery_refuses_a_rebound_name_and_reports_categories(
    tmp_path: Path, receiver: tuple[int, list[str]]
) -> None:
    """In-process Webhooks with an injected resolver: the name resolves to the receiver (loopback)."""
    port, got = receiver
    store = await Store.open(tmp_path / "worker.db")
    events = EventLog(store, retention=3600)
    events.start()
    http = webhook_client(allow_private=False, resolver=FakeDNS({"hooks.example": ["127.0.0.1"]}))
    webhooks = Webhooks(events, http, worker_id="w")

    async def deliver_to(url: str) -> dict[str, object]:
        """Point s1's webhook at ``url``, emit one event once its deliverer is listening, and
        return the webhook's figures after the first failed attempt."""
        await webhooks.set("s1", url)
        deliverer, latest = webhooks.deliverers["s1"], await store.last_event_seq()

        async def listening() -> bool:
            return deliverer.cursor >= latest and deliverer._task is not None

        await wait_for(listening, what="the deliverer's start")
        await events.emit("s1", "connected", {"phoneNumber": "62800"})

        async def failed() -> dict[str, object] | None:
            described = webhooks.describe("s1")
            return described if described is not None and described["failures"] else None

        return await wait_for(failed, what=f"a failed delivery to {url}")

    try:
        described = await deliver_to(f"http://hooks.example:{port}/hook")
        assert described["lastError"] == "refused_address" and described["delivered"] == 0
        assert got == []
        # Allowed (development), a redirect is still not followed: a failed delivery, reported as http_3xx.
        await http.close()
        webhooks.http = http = webhook_client(allow_private=True, resolver=FakeDNS({"hooks.example": ["127.0.0.1"]}))
        described = await deliver_to(f"http://hooks.example:{port}/redirect")
        assert described["lastError"] == "http_3xx" and got == []
        # A closed port: the category "refused", not the connection error's text (host, port, errno).
        described = await deliver_to(f"http://hooks.example:{free_port()}/hook")
        assert described["lastError"] == "refused"
    finally:
        await webhooks.close()
        await http.close()
        await events.close()
        await store.close()
