"""Where a webhook may be delivered: public addresses only, checked when the URL is set and again at
every connection (docs/security.md, Outbound calls).

A webhook URL comes from an API client and is fetched from inside the worker's network, so without a
check it reaches what only the worker can: loopback services, the pod network, cloud metadata
(169.254.169.254). The URL's host is checked when it is set (:func:`refused_host`), and the addresses
actually connected to are checked again at delivery by the webhooks' own HTTP client
(:func:`webhook_client`): a name that resolved to a public address when it was set may resolve to a
private one later (DNS rebinding). ``WEBHOOK_ALLOW_PRIVATE=true`` lifts both checks (development).
"""

from __future__ import annotations

import errno
import ipaddress
import socket

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names that mean this machine whatever DNS says (RFC 6761, and Debian's /etc/hosts).
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class RefusedDestination(OSError):
    """A webhook's connection would go to an address that is not public."""

    def __init__(self) -> None:
        # One fixed text: several refused addresses of one name then read as one failure, not a list.
        super().__init__(errno.EACCES, "destination address refused (not public; see WEBHOOK_ALLOW_PRIVATE)")


def refused_address(address: IPAddress) -> bool:
    """True unless ``address`` is a public unicast address.

    Refused: loopback, private (RFC 1918, fc00::/7), shared (100.64/10), link-local (cloud metadata,
    fe80::/10), multicast, reserved, documentation and unspecified (0.0.0.0, ::). An IPv6 address that
    embeds an IPv4 one (IPv4-mapped ::ffff:a.b.c.d) gets the embedded address's verdict; a 6to4 one (2002::/16)
    is refused when the embedded address is. NAT64 (64:ff9b::/96) is reserved: refused.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # A socket connects to the IPv4 address itself: its verdict, whatever ::ffff:0:0/96's is.
            return refused_address(address.ipv4_mapped)
        if address.sixtofour is not None and refused_address(address.sixtofour):
            return True
    return not address.is_global or address.is_multicast or address.is_reserved


def _parse_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def refused_host(host: str) -> str | None:
    """Why a webhook URL's host is refused when the URL is set, or None (the name is checked again,
    resolved, at each delivery).

    IPv4 in the legacy forms ``inet_aton`` reads (``2130706433``, ``0x7f.1``, ``127.1``) is what a
    resolver would make of it, so it is judged as that address, and refused anyway: only the dotted
    form is accepted, so what the URL says is what is reached.
    """
    name = host.strip("[]").rstrip(".").lower()
    if name in LOCAL_NAMES or name.endswith(".localhost"):
        return "names this machine"
    address = _parse_address(name)
    if address is None and name and all(c in "0123456789abcdefx." for c in name):
        try:
            packed = socket.inet_aton(name)
        except OSError:
            return None  # not an address in any form: a name, resolved and checked at delivery
        if refused_address(ipaddress.IPv4Address(packed)):
            return "is not a public address"
        return "is not a dotted IPv4 address"
    if address is not None and refused_address(address):
        return "is not a public address"
    return None


def refused_url(url: str) -> str | None:
    """Why the webhook URL ``url`` is refused (its host, as :func:`refused_host`), or None."""
    try:
        host = URL(url).raw_host
    except ValueError:
        return "is not a valid URL"
    if not host:
        return "has no host"
    reason = refused_host(host)
    return None if reason is None else f"host {host!r} {reason}"


class PublicResolver(AbstractResolver):
    """Resolves with ``inner`` and keeps only the public addresses; none left: RefusedDestination."""

    def __init__(self, inner: AbstractResolver) -> None:
        self.inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The public addresses among ``inner``'s answer for ``host``."""
        answer = await self.inner.resolve(host, port, family)
        public = [r for r in answer if not _refused_text(r["host"])]
        if not public:
            raise RefusedDestination()
        return public

    async def close(self) -> None:
        await self.inner.close()


def _refused_text(host: str) -> bool:
    # A scoped IPv6 address ("fe80::1%eth0") is link-local; anything unparsable is refused: fail closed.
    address = _parse_address(host.split("%", 1)[0])
    return address is None or refused_address(address)


def _public_socket(addr_info: AddrInfoType) -> socket.socket:
    """The connector's socket factory: the last check, on the very address about to be connected.

    aiohttp hands a literal IP in a URL straight to the connection without asking the resolver,
    so this is where such an address is refused.
    """
    family, type_, proto, _, sockaddr = addr_info
    if _refused_text(str(sockaddr[0])):
        raise RefusedDestination()
    return socket.socket(family=family, type=type_, proto=proto)


def webhook_client(*, allow_private: bool, resolver: AbstractResolver | None = None) -> aiohttp.ClientSession:
    """The HTTP client webhooks are delivered with: public destinations only (unless ``allow_private``).

    ``resolver`` answers name lookups (default: the system's, in a thread); tests pass one with
    chosen answers. No cookies are kept (one receiver's cookies are no business of the next), and the
    environment's proxy settings are ignored (a proxy would connect on our behalf, unchecked).
    """
    inner = resolver if resolver is not None else aiohttp.ThreadedResolver()
    if allow_private:
        connector = aiohttp.TCPConnector(resolver=inner)
    else:
        connector = aiohttp.TCPConnector(resolver=PublicResolver(inner), socket_factory=_public_socket)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
