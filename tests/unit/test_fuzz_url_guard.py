"""The URL guard (functions.lib.fetch) under every way of writing an internal address (Hypothesis).

Internal means what IANA's special-purpose registries call not globally reachable, plus the cloud
metadata addresses: loopback, private, shared (CGNAT), link-local, multicast, reserved, documentation,
and the IPv6 forms that carry an IPv4 address (mapped, compatible, SIIT, NAT64, 6to4, Teredo). Each is
written every way a resolver or an HTTP client accepts: one to four parts in decimal, octal or hex,
short forms like 127.1, upper case, zero padding, zone ids, trailing dots, percent-encoding, userinfo and
fragment tricks; reached directly, through a DNS name, through a name whose answer changes between the
check and the connection, and through redirects.

The property: ingestion's path (`check_url`, then `download` with the guarded session) ends in
BadRequest, URLRefused or an unresolvable name, and never opens a connection to the address. Nothing
leaves this machine: names resolve only numerically or through the test's own resolver, and every
connection goes through a tripwire that lets through only the loopback servers the tests start, and
records any other attempt instead of making it.
"""

from __future__ import annotations

import dataclasses
import http.server
import ipaddress
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.lib.config import Settings
from functions.lib.errors import BadRequest, DandelionError, UpstreamError, URLRefused
from functions.lib.fetch import check_url, download, is_public, make_session
from tests.support import loopback_server

SETTINGS = dataclasses.replace(Settings.from_env({}), connect_timeout=2, read_timeout=2, download_deadline=5)

INTERNAL_V4 = [
    "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the local host
    "10.0.0.0/8",
    "100.64.0.0/10",  # shared address space (CGNAT); Alibaba Cloud's metadata is 100.100.100.200
    "127.0.0.0/8",
    "169.254.0.0/16",  # link-local: the metadata service of most clouds, 169.254.169.254
    "172.16.0.0/12",
    "192.0.0.0/24",  # IETF protocol assignments: Oracle Cloud's metadata is 192.0.0.192
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
METADATA_V4 = ["169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "127.0.0.1", "0.0.0.0"]
INTERNAL_V6 = [
    "::1/128",
    "::/128",
    "::/8",  # reserved, less the forms below that carry an IPv4 address (`v4_inside_v6` writes those)
    "100::/64",  # discard
    "2001:db8::/32",
    "3fff::/20",  # documentation
    "5f00::/16",  # segment routing
    "fc00::/7",  # unique local: AWS's metadata is fd00:ec2::254
    "fe80::/10",
    "fec0::/10",  # site-local
    "ff00::/8",
]
# Judged by the IPv4 address they carry, which may be public: compatible, mapped, SIIT-translated.
CARRYING_V4 = [ipaddress.IPv6Network(prefix) for prefix in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96")]
PUBLIC = ["8.8.8.8", "185.199.108.133", "2606:4700:4700::1111", "2a00:1450:4001::200e"]


def in_network(prefix: str) -> st.SearchStrategy[Any]:
    network = ipaddress.ip_network(prefix)
    first = int(network.network_address)
    return st.integers(first, first + network.num_addresses - 1).map(type(network.network_address))


internal_v4 = st.sampled_from(METADATA_V4).map(ipaddress.IPv4Address) | st.sampled_from(INTERNAL_V4).flatmap(
    in_network
)
internal_v6 = st.just(ipaddress.IPv6Address("fd00:ec2::254")) | st.sampled_from(INTERNAL_V6).flatmap(
    lambda prefix: in_network(prefix).filter(
        lambda address: prefix != "::/8" or not any(address in network for network in CARRYING_V4)
    )
)


@st.composite
def number(draw: st.DrawFn, value: int) -> str:
    """`value` as inet_aton reads a part: decimal, octal (leading 0) or hex (0x/0X), maybe zero-padded."""
    radix = draw(st.sampled_from(["dec", "oct", "hex", "HEX"]))
    padding = "0" * draw(st.integers(0, 3))
    if radix == "dec":
        return str(value)
    if radix == "oct":
        return "0" + padding + format(value, "o")
    digits = padding + format(value, "x" if radix == "hex" else "X")
    return ("0x" if radix == "hex" else "0X") + digits


@st.composite
def v4_text(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """An IPv4 address in one to four parts (a.b.c.d, a.b.c16, a.b24, a32), each part in any radix."""
    value = int(address)
    widths = draw(st.sampled_from([(8, 8, 8, 8), (8, 8, 16), (8, 24), (32,)]))
    parts, shift = [], 32
    for width in widths:
        shift -= width
        parts.append(draw(number((value >> shift) & ((1 << width) - 1))))
    return ".".join(parts)


@st.composite
def v6_text(draw: st.DrawFn, address: ipaddress.IPv6Address) -> str:
    """An IPv6 address compressed, or in full with or without zero padding, in either case."""
    groups = [(int(address) >> shift) & 0xFFFF for shift in range(112, -1, -16)]
    text = draw(
        st.sampled_from(
            [address.compressed, ":".join(f"{g:04x}" for g in groups), ":".join(f"{g:x}" for g in groups)]
        )
    )
    return draw(st.sampled_from([text, text.upper()]))


@st.composite
def v4_inside_v6(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """`address` carried by an IPv6 address, in each form whose packets reach it."""
    high, low = int(address) >> 16, int(address) & 0xFFFF
    dotted, pair = str(address), f"{high:x}:{low:x}"
    tail = draw(st.sampled_from([dotted, pair]))
    form = draw(
        st.sampled_from(
            [
                f"::ffff:{tail}",  # mapped
                f"0:0:0:0:0:ffff:{pair}",
                f"0000:0000:0000:0000:0000:FFFF:{high:04X}:{low:04X}",
                f"::{tail}",  # compatible
                f"::ffff:0:{tail}",  # SIIT translated
                f"64:ff9b::{tail}",  # NAT64
                f"64:ff9b:1:{draw(st.integers(0, 0xFFFF)):x}::{pair}",  # local-use NAT64
                f"2002:{pair}::{draw(st.integers(0, 0xFFFF)):x}",  # 6to4
                # Teredo: the client's address inverted in the last 32 bits (the server's is public)
                f"2001:0:4136:e378:8000:63bf:{high ^ 0xFFFF:x}:{low ^ 0xFFFF:x}",
                f"2001:0:{pair}:8000:63bf:f7f7:f7f7",  # Teredo, the server's address internal
            ]
        )
    )
    return draw(st.sampled_from([form, form.upper()]))


@st.composite
def internal_host(draw: st.DrawFn, exclude: frozenset[str] = frozenset()) -> str:
    """An internal address (other than those in `exclude`) written as a URL's host, any way."""
    kind = draw(st.sampled_from(["v4", "v6", "v4-in-v6"]))
    address = draw((internal_v6 if kind == "v6" else internal_v4).filter(lambda a: str(a) not in exclude))
    if kind == "v4":
        host = draw(v4_text(address))
        return host + draw(st.sampled_from(["", "."]))
    text = draw(v6_text(address) if kind == "v6" else v4_inside_v6(address))
    zone = draw(st.sampled_from(["", "", "%25lo", "%251", "%25eth0"]))
    return f"[{text}{zone}]"


def percent_encoded(host: str, index: int) -> str:
    """One character of `host` percent-encoded (a spelling some parsers decode and others refuse)."""
    at = index % len(host)
    return host[:at] + f"%{ord(host[at]):02X}" + host[at + 1 :]


# URL forms: the host plain, behind credentials or confusable userinfo, ahead of a fragment or a query
# that looks like userinfo, or partly percent-encoded.
FORMS: dict[str, Callable[[str, str], str]] = {
    "plain": lambda scheme, host: f"{scheme}://{host}/a.jpg",
    "port": lambda scheme, host: f"{scheme}://{host}:80/a.jpg",
    "credentials": lambda scheme, host: f"{scheme}://user:pw@{host}/a.jpg",
    "userinfo public": lambda scheme, host: f"{scheme}://images.example.org@{host}/a.jpg",
    "fragment": lambda scheme, host: f"{scheme}://{host}#@images.example.org/a.jpg",
    "query": lambda scheme, host: f"{scheme}://{host}?@images.example.org/a.jpg",
    "backslash": lambda scheme, host: f"{scheme}://images.example.org\\@{host}/a.jpg",
}
SCHEMES = st.sampled_from(["http", "https", "HTTP", "hTtPs"])


class Network:
    """What the guarded session may reach: names resolved only numerically or from `names`, connections
    opened only to `reachable` (loopback servers the tests start); any other connection is recorded in
    `attempts`, never made."""

    def __init__(self) -> None:
        self.names: dict[str, list[list[str]]] = {}  # lower-case name -> its answers, one list per lookup
        self.reachable: set[tuple[str, int]] = set()
        self.attempts: list[Any] = []
        self._getaddrinfo = socket.getaddrinfo
        self._connect = socket.socket.connect

    def getaddrinfo(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        name = (host.decode() if isinstance(host, bytes) else host).lower()
        if name in self.names:
            answers = self.names[name]
            addresses = answers.pop(0) if len(answers) > 1 else answers[0]
            return [self._info(address, int(port or 0)) for address in addresses]
        return self._getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    @staticmethod
    def _info(address: str, port: int) -> tuple:
        if ":" in address:
            return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
        return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))

    def connect(self, sock: socket.socket, address: Any) -> None:
        if (address[0], address[1]) not in self.reachable:
            self.attempts.append(address)
            raise ConnectionRefusedError(f"tripwire: the test refused a connection to {address}")
        self._connect(sock, address)


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    net = Network()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", net.getaddrinfo)
        patch.setattr(socket.socket, "connect", lambda sock, address: net.connect(sock, address))
        yield net


def ingest_path(
    network: Network,
    url: str,
    names: dict[str, list[list[str]]] | None = None,
    allowed: Callable[[str], bool] = is_public,
) -> DandelionError:
    """What ingestion does with `url` (check, then download) with these DNS `names`, which must refuse
    it without connecting."""
    network.names, network.attempts = names or {}, []
    session = make_session(SETTINGS, allowed)
    with pytest.raises((BadRequest, URLRefused, UpstreamError)) as refused:
        check_url(url)
        download(session, url, SETTINGS)
    assert network.attempts == [], f"{url}: a connection was attempted to {network.attempts}"
    return refused.value


def unresolvable(error: DandelionError) -> bool:
    return isinstance(error, UpstreamError) and str(error).startswith("cannot resolve")


@given(SCHEMES, internal_host(), st.sampled_from(sorted(FORMS)))
def test_every_spelling_of_an_internal_address_is_refused(
    network: Network, scheme: str, host: str, form: str
) -> None:
    error = ingest_path(network, FORMS[form](scheme, host))
    if form in ("credentials", "userinfo public", "backslash"):
        assert isinstance(error, BadRequest)
    elif isinstance(error, URLRefused):
        assert "which is not a public address" in str(error)
    else:  # a spelling the resolver does not take as a number: no address, no connection
        assert unresolvable(error) or isinstance(error, BadRequest), error


@given(SCHEMES, internal_host(), st.integers(0, 100))
def test_a_percent_encoded_internal_address_is_refused(
    network: Network, scheme: str, host: str, index: int
) -> None:
    encoded = percent_encoded(host.strip("[]"), index)
    ingest_path(network, f"{scheme}://{'[' + encoded + ']' if host.startswith('[') else encoded}/a.jpg")


NAME = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True)
KNOWN_NAMES = ["localhost", "metadata.google.internal", "instance-data.ec2.internal", "kubernetes.default"]


@st.composite
def answers(draw: st.DrawFn) -> list[str]:
    """A DNS answer holding at least one internal address, among public ones, in any order."""
    internal = [str(address) for address in draw(st.lists(internal_v4 | internal_v6, min_size=1, max_size=3))]
    public = draw(st.lists(st.sampled_from(PUBLIC), max_size=3))
    return draw(st.permutations(internal + public))


@given(SCHEMES, NAME | st.sampled_from(KNOWN_NAMES), answers(), st.booleans(), st.booleans())
def test_a_name_that_resolves_to_an_internal_address_is_refused(
    network: Network, scheme: str, name: str, addresses: list[str], upper: bool, dot: bool
) -> None:
    written = (name.upper() if upper else name) + ("." if dot else "")
    names = {name: [addresses], f"{name}.": [addresses]}
    error = ingest_path(network, f"{scheme}://{written}/a.jpg", names)
    assert isinstance(error, URLRefused), error


@given(NAME, st.sampled_from(PUBLIC), internal_v4 | internal_v6)
def test_a_name_whose_absolute_form_resolves_elsewhere_is_refused(
    network: Network, name: str, public: str, internal: Any
) -> None:
    """With search domains, `name` and `name.` are different queries: the one checked must be the one
    connected to."""
    names = {name: [[public]], f"{name}.": [[str(internal)]]}
    error = ingest_path(network, f"http://{name}./a.jpg", names)
    assert isinstance(error, URLRefused), error


class Canary(http.server.BaseHTTPRequestHandler):
    """A loopback server that counts the requests it gets: the guard must let none through."""

    requests = 0

    def do_GET(self) -> None:
        Canary.requests += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture(scope="module")
def canary(network: Network) -> Iterator[int]:
    with loopback_server(Canary) as server:
        network.reachable.add(("127.0.0.1", server.server_port))
        yield server.server_port


@given(st.sampled_from(PUBLIC))
def test_an_answer_that_changes_after_the_check_is_refused_before_a_request_is_sent(
    network: Network, canary: int, public: str
) -> None:
    """DNS rebinding: the check sees a public address, the connection gets loopback."""
    requests_before = Canary.requests
    names = {"rebind.example": [[public], ["127.0.0.1"]]}
    error = ingest_path(network, f"http://rebind.example:{canary}/a.jpg", names)
    assert str(error) == "'rebind.example' connected to 127.0.0.1, which is not a public address"
    assert Canary.requests == requests_before


class Redirector(http.server.BaseHTTPRequestHandler):
    """Answers every request with a redirect to `Redirector.location`."""

    location = ""
    status = 302

    def do_GET(self) -> None:
        self.send_response(Redirector.status)
        self.send_header("Location", Redirector.location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def redirector(network: Network) -> Iterator[str]:
    with loopback_server(Redirector) as server:
        network.reachable.add(("127.0.0.1", server.server_port))
        yield f"http://127.0.0.1:{server.server_port}/start.jpg"


@given(
    st.sampled_from([301, 302, 303, 307, 308]),
    SCHEMES,
    internal_host(exclude=frozenset({"127.0.0.1"})),
    st.sampled_from(sorted(FORMS)),
)
def test_a_redirect_to_an_internal_address_is_refused(
    network: Network, redirector: str, status: int, scheme: str, host: str, form: str
) -> None:
    """The source itself passes (this test's policy allows its one loopback address); where it sends
    the download does not. Redirects skip `check_url`: the guard alone holds."""
    Redirector.status, Redirector.location = status, FORMS[form](scheme, host)
    error = ingest_path(network, redirector, allowed=lambda address: address == "127.0.0.1")
    invalid = str(error).startswith("a redirect led to an invalid URL")  # a zone id urllib3 refuses
    assert isinstance(error, URLRefused) or unresolvable(error) or invalid, error
