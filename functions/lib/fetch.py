"""Download from a URL someone else chose, safely.

The address check sits in the connection itself (every connection, so every redirect hop): the host is
resolved and refused if any address is not public, and the socket's peer is checked again after
connecting, so a DNS answer that changes between the two cannot slip through.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from functions.lib.config import Settings
from functions.lib.errors import BadRequest, TooLarge, UpstreamError, UpstreamTimeout, URLRefused

CHUNK = 64 * 1024


MAX_URL_LENGTH = 2048  # the catalog's url_source column, and what browsers and servers commonly accept
_USERINFO = re.compile(r"(?<=://)[^/?#@\s'\"]*@")


def without_credentials(text: str) -> str:
    """`text` with the `user:password@` of every URL in it masked: error messages are answered, kept in
    the catalog and shown by extract-images' summary, and none of them may carry a password."""
    return _USERINFO.sub("***@", text)


def check_url(url: str) -> None:
    """Refuse what is not an absolute http(s) URL with a host and without credentials, before anything
    is written."""
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"URLs are limited to {MAX_URL_LENGTH} characters; this one has {len(url)}")
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - parsing the port is what checks it
    except ValueError:
        raise BadRequest(f"not a valid URL: {without_credentials(url[:200])!r}") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        shown = without_credentials(url[:200])
        raise BadRequest(f"only absolute http and https URLs can be ingested, got {shown!r}")
    if parsed.username is not None or parsed.password is not None:
        raise BadRequest(
            "URLs carrying credentials (user:password@) are refused; they would be stored and shown"
        )


# IPv6 prefixes whose last 32 bits are an IPv4 address that the packet reaches: NAT64 (RFC 6052, and the
# local-use prefix of RFC 8215), the deprecated IPv4-compatible form (RFC 4291) and SIIT's IPv4-translated
# form (RFC 2765).
_IPV4_IN_LOW_BITS = tuple(
    ipaddress.IPv6Network(prefix) for prefix in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96")
)
# Not globally reachable (IANA's special-purpose registries), whatever the running Python's `is_global`
# says: its table is the one of its release, and 3.11's misses these.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(prefix)
    for prefix in (
        "192.0.0.0/24",  # IETF protocol assignments; 192.0.0.192 is a cloud metadata address (Oracle's)
        "::/8",  # reserved by the IETF, beyond the forms above that carry an IPv4 address
        "fec0::/10",  # site-local: deprecated (RFC 3879), still routed inside some sites
        "5f00::/16",  # segment routing identifiers (RFC 9602): routed inside an operator's domain
        "3fff::/20",  # documentation (RFC 9637)
    )
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo server and client, NAT64,
    IPv4-compatible); empty when it carries none."""
    if ip.ipv4_mapped:
        return [ip.ipv4_mapped]
    if ip.sixtofour:
        return [ip.sixtofour]
    if ip.teredo:
        return list(ip.teredo)
    if any(ip in network for network in _IPV4_IN_LOW_BITS):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


def is_public(address: str) -> bool:
    """True for globally routable unicast addresses (so not loopback, private, link-local, metadata...).

    An IPv6 address that carries an IPv4 address is judged by that IPv4 address: `64:ff9b::a9fe:a9fe`
    is the metadata service behind a NAT64 gateway, whatever Python's `is_global` says of the prefix.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded:
            return all(is_public(str(v4)) for v4 in embedded)
    return ip.is_global and not ip.is_multicast and not any(ip in network for network in _NOT_GLOBAL)


def _refuse(host: str, port: int, allowed: Callable[[str], bool]) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UpstreamError(f"cannot resolve {host!r}: {exc.strerror}") from None
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if not allowed(address):
            raise URLRefused(f"{host!r} resolves to {address}, which is not a public address")


Origin = tuple[str, int]  # (host, port) as a connection is made to it


class _GuardMixin:
    port: int
    address_allowed: Callable[[str], bool]
    trusted: Origin | None

    def __init__(self, host: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(host, *args, **kwargs)  # type: ignore[call-arg]
        # The name as given, which urllib3 resolves and connects to: its `host` drops a trailing dot, and
        # with DNS search domains `name` and `name.` are different questions. The one checked must be the
        # one connected to.
        self.given_host = host

    def _new_conn(self) -> socket.socket:
        if (self.given_host, self.port) == self.trusted:
            return super()._new_conn()  # type: ignore[misc]
        _refuse(self.given_host, self.port, self.address_allowed)
        sock = super()._new_conn()  # type: ignore[misc]
        peer = sock.getpeername()[0]
        if not self.address_allowed(peer):
            sock.close()
            raise URLRefused(f"{self.given_host!r} connected to {peer}, which is not a public address")
        return sock


def _guarded_pools(
    allowed: Callable[[str], bool], trusted: Origin | None
) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools whose every new connection passes the address check, but to `trusted`."""

    class Connection(_GuardMixin, HTTPConnection):
        address_allowed = staticmethod(allowed)

    class TLSConnection(_GuardMixin, HTTPSConnection):
        address_allowed = staticmethod(allowed)

    Connection.trusted = TLSConnection.trusted = trusted

    class Pool(HTTPConnectionPool):
        ConnectionCls = Connection

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConnection

    return {"http": Pool, "https": TLSPool}


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allowed: Callable[[str], bool], trusted: Origin | None) -> None:
        self._pools = _guarded_pools(allowed, trusted)
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools


def make_session(settings: Settings, allowed: Callable[[str], bool] = is_public) -> requests.Session:
    """A session for untrusted URLs: no proxies from the environment, bounded redirects, address guard.

    `allowed` is the address policy; only tests, confined to loopback, pass anything but `is_public`.
    The origin of DANDELION_SOURCE_MIRROR (the operator's own, often a loopback server) is exempt, and
    nothing else is: not its other ports, not where it redirects.
    """
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = settings.max_redirects
    session.headers["User-Agent"] = "dandelion-ingest/0.1"
    if not settings.allow_private_urls:
        adapter = _GuardedAdapter(
            allowed, _origin(settings.source_mirror[1]) if settings.source_mirror else None
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


def _origin(url: str) -> Origin:
    parts = urlparse(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def download(session: requests.Session, url: str, settings: Settings) -> bytes:
    """The body of `url`, streamed under a size cap, per-read timeouts and an overall deadline."""
    cap = settings.max_download_bytes
    late = UpstreamTimeout(f"the download took over {settings.download_deadline:.0f} s")
    answers: list[requests.Response] = []  # each answer, redirects included, as it arrives
    try:
        with session.get(
            url,
            stream=True,
            timeout=(settings.connect_timeout, settings.read_timeout),
            hooks={"response": lambda answer, **_: answers.append(answer)},
        ) as response:
            if response.status_code != 200:
                raise UpstreamError(f"the source answered HTTP {response.status_code}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > cap:
                raise TooLarge(f"the source declares {declared} bytes, over the {cap}-byte limit")
            # The deadline holds whatever the peer does: a source that drips a byte at a time never trips
            # the per-read timeout, so a timer shuts the connection down under the blocked read.
            expired = threading.Event()

            def give_up() -> None:
                expired.set()
                response.raw.shutdown()

            timer = threading.Timer(settings.download_deadline, give_up)
            timer.start()
            try:
                body = bytearray()
                for chunk in response.iter_content(CHUNK):
                    body += chunk
                    if len(body) > cap:
                        raise TooLarge(f"the download passed the {cap}-byte limit")
                    if expired.is_set():
                        raise late
                return bytes(body)
            except Exception:
                if expired.is_set():
                    raise late from None
                raise
            finally:
                timer.cancel()
    except requests.TooManyRedirects:
        raise UpstreamError(f"more than {settings.max_redirects} redirects") from None
    except requests.exceptions.InvalidSchema as exc:
        raise URLRefused(f"a redirect left http(s): {without_credentials(str(exc))}") from None
    except requests.exceptions.InvalidURL as exc:  # a host urllib3 cannot connect to: a zone id on a global
        reason = without_credentials(str(exc))  # address, say; the source's mistake if a redirect led there
        if answers:
            raise UpstreamError(f"a redirect led to an invalid URL: {reason}") from None
        raise BadRequest(f"not a valid URL: {reason}") from None
    except requests.Timeout:
        raise UpstreamTimeout("the source did not answer in time") from None
    except requests.RequestException as exc:
        raise UpstreamError(f"download failed: {type(exc).__name__}") from None
