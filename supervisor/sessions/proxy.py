"""A session's proxy: which URLs are accepted, how one is shown (password masked), and how it is
stored (sealed with ``ENCRYPTION_KEY``, the session id authenticated with it).

The proxy is the address WhatsApp sees a session connect from: it is stored with the session so
every start, also after a worker restart, dials through it, and a session whose stored proxy cannot
be read is never started (it would connect from the worker's own address).
"""

from __future__ import annotations

from supervisor.storage.cipher import MAGIC_PLAIN, BackupCipher, BackupRefused
from supervisor.url_hosts import IPV6_LITERAL

# What whatsmeow's SetProxyAddress takes (socks5, http, https: anything else fails every dial), with a
# host and an explicit port, no path. Lower-case schemes only: one spelling, compared as written.
# whatsmeow's SOCKS5 dialer hands host names to the proxy to resolve, so socks5h has nothing to add.
PROXY_URL_PATTERN = (
    r"^(socks5|http|https)://"
    r"((?:[A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})+@)?"  # user:password@ (RFC 3986 userinfo)
    rf"({IPV6_LITERAL}|[A-Za-z0-9._-]+)"  # [IPv6], IPv4 or a host name
    r":(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"  # port 1-65535
    r"/?$"
)
PROXY_SCHEMES = ("socks5", "http", "https")
MASK = "***"
# What the sealed value is named in its associated data beside the session (a backup names its version).
PROXY_VERSION = "proxy"


def masked(url: str | None) -> str | None:
    """``url`` with its password replaced by ``***`` (``socks5://user:***@host:1080``), as answers show it."""
    if url is None:
        return None
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url  # no password to hide
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{MASK}@{host}"


class ProxyUnreadable(Exception):
    """A stored proxy that cannot be opened (ENCRYPTION_KEY changed or unset, or the value was altered)."""


class ProxySeal:
    """Seals proxies for the database with the backups' cipher (AES-256-GCM, scrypt-derived key).

    Without ENCRYPTION_KEY a proxy is stored in the clear (the cipher's plain form). The associated
    data names the session and that this is a proxy: a sealed proxy copied to another session, or
    passed off as a backup, fails authentication.
    """

    def __init__(self, encryption_key: str | None) -> None:
        self._cipher = BackupCipher(encryption_key)

    @property
    def encrypting(self) -> bool:
        return self._cipher.encrypting

    @staticmethod
    def _bound_to(session_id: str) -> str:
        # Session ids never hold ":" (bodies.SESSION_ID_PATTERN): no backup's session id reads like this.
        return f"proxy:{session_id}"

    def seal(self, url: str, session_id: str) -> bytes:
        """The stored form of ``session_id``'s proxy (blocking, scrypt on a new salt: call in a thread)."""
        return self._cipher.seal(url.encode(), self._bound_to(session_id), PROXY_VERSION)

    def open(self, stored: bytes, session_id: str) -> str:
        """The proxy URL in ``stored``; raises ProxyUnreadable when it cannot be trusted (blocking)."""
        try:
            if stored.startswith(MAGIC_PLAIN):
                # Also with ENCRYPTION_KEY set (stored before it was; the caller seals it now). Unlike a
                # backup, refusing a plain one protects nothing: whoever can write the database can add sessions.
                return stored[len(MAGIC_PLAIN) :].decode()
            return self._cipher.open(stored, self._bound_to(session_id), PROXY_VERSION).decode()
        except BackupRefused as exc:
            raise ProxyUnreadable(str(exc).replace("the backup", "the stored proxy")) from None
        except UnicodeDecodeError:
            raise ProxyUnreadable("the stored proxy is not text (corrupt)") from None

    @staticmethod
    def sealed(stored: bytes) -> bool:
        """Whether ``stored`` is encrypted (not the plain form)."""
        return not stored.startswith(MAGIC_PLAIN)
