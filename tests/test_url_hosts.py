"""A URL's IPv6 host, as the webhook and proxy declarations (and so the OpenAPI document) accept it."""

from __future__ import annotations

import ipaddress
import re

from hypothesis import given
from hypothesis import strategies as st

from supervisor.api.bodies import WEBHOOK_URL_PATTERN
from supervisor.sessions.proxy import PROXY_URL_PATTERN
from supervisor.url_hosts import IPV6_ADDRESS

ADDRESS = re.compile(IPV6_ADDRESS)
WEBHOOK = re.compile(WEBHOOK_URL_PATTERN)
PROXY = re.compile(PROXY_URL_PATTERN)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return "%" not in text  # a scope id has no place in a URL's host


@given(st.ip_addresses(v=6), st.booleans())
def test_every_ipv6_address_is_accepted_compressed_or_not(address: ipaddress.IPv6Address, exploded: bool) -> None:
    text = address.exploded if exploded else address.compressed
    assert ADDRESS.fullmatch(text), text
    assert WEBHOOK.fullmatch(f"https://[{text}]:8443/hook"), text
    assert PROXY.fullmatch(f"socks5://[{text}]:1080"), text


@given(st.text(alphabet="0123456789abcdefABCDEFg:.", max_size=45))
def test_a_bracketed_host_is_accepted_exactly_when_it_is_an_ipv6_address(text: str) -> None:
    assert bool(ADDRESS.fullmatch(text)) == _is_ipv6(text), text


def test_what_the_looser_pattern_let_through_is_refused() -> None:
    # Found by the API fuzz run: a webhook URL with this host was accepted and echoed back.
    for host in ("FD97D5bC8EcDB1432DcC3.5Bc1:049CF", "1.2.3.4", ":::", "1::2::3", "12345::", "::ffff:1.2.3.04"):
        assert not WEBHOOK.fullmatch(f"http://[{host}]/hook"), host
        assert not PROXY.fullmatch(f"socks5://[{host}]:1080"), host
    for host in ("::", "::1", "2606:4700:4700::1111", "::ffff:192.0.2.1", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:1.2.3.4"):
        assert WEBHOOK.fullmatch(f"http://[{host}]/hook"), host
