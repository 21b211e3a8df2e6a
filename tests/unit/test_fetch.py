import contextlib
import dataclasses
import http.server
import time

import pytest

from functions.lib.config import Settings
from functions.lib.errors import BadRequest, UpstreamTimeout, URLRefused
from functions.lib.fetch import check_url, download, is_public, make_session
from tests.support import loopback_server


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.9.9.9",
        "::1",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "fd00:ec2::254",
        "fe80::1%eth0",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        # Found by tests/unit/test_fuzz_url_guard.py: Python 3.11's `is_global` calls these global.
        "192.0.0.192",  # IETF protocol assignments; a cloud metadata address
        "5f00::1",  # segment routing identifiers
        "3fff::1",  # documentation
        "::1:2:3:4",  # reserved by the IETF
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert is_public(address) is False


@pytest.mark.parametrize("address", ["185.199.108.133", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public(address) is True


# Internal addresses written as IPv6 forms that carry an IPv4 address, and public ones in the same forms.
EMBEDDED = {
    "NAT64 (64:ff9b::/96)": ("64:ff9b::a9fe:a9fe", "64:ff9b::808:808"),
    "local-use NAT64 (64:ff9b:1::/48)": ("64:ff9b:1::7f00:1", "64:ff9b:1::808:808"),
    "6to4 (2002::/16)": ("2002:a9fe:a9fe::1", "2002:808:808::1"),
    "IPv4-compatible (::/96)": ("::a9fe:a9fe", "::808:808"),
    "SIIT IPv4-translated (::ffff:0:0:0/96)": ("::ffff:0:a9fe:a9fe", "::ffff:0:808:808"),
    # Teredo stores its client address inverted: 3fff:fdd2 is 192.0.2.45 (documentation, not global),
    # f7f7:f7f7 is 8.8.8.8; its server, 65.54.227.120, is public.
    "Teredo (2001::/32)": ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:0:4136:e378:8000:63bf:f7f7:f7f7"),
}


@pytest.mark.parametrize("internal", [pair[0] for pair in EMBEDDED.values()], ids=list(EMBEDDED))
def test_an_internal_ipv4_address_written_as_ipv6_is_refused(internal: str) -> None:
    assert is_public(internal) is False


@pytest.mark.parametrize("public", [pair[1] for pair in EMBEDDED.values()], ids=list(EMBEDDED))
def test_a_public_ipv4_address_written_as_ipv6_is_judged_by_its_ipv4_address(public: str) -> None:
    assert is_public(public) is True


@pytest.mark.parametrize("address", ["fec0::1", "fec0:0:0:ffff::1", "feff::1"])
def test_site_local_ipv6_is_refused(address: str) -> None:
    assert is_public(address) is False


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a.jpg", "file:///etc/passwd", "example.com/a.jpg", "http:///a.jpg", "gopher://x/"],
)
def test_only_absolute_http_urls(url: str) -> None:
    with pytest.raises(BadRequest, match="only absolute http and https URLs"):
        check_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.org/" + "a" * 2030, "URLs are limited to 2048 characters; this one has 2049"),
        ("http://user:pw@example.org/a.jpg", r"credentials \(user:password@\) are refused"),
        ("http://user@example.org/a.jpg", r"credentials \(user:password@\) are refused"),
        ("http://[::1/a.jpg", "not a valid URL"),
        ("http://example.org:99999/a.jpg", "not a valid URL"),
    ],
)
def test_long_malformed_and_credentialed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        check_url(url)


def test_a_url_of_exactly_the_limit_passes() -> None:
    check_url("http://example.org/" + "a" * 2029)


def test_a_url_the_http_client_cannot_use_is_a_bad_request() -> None:
    """Found by fuzzing (test_fuzz_url_guard.py): a zone id on a global IPv6 address passes `check_url`
    but not urllib3, and was answered 502 (download failed: InvalidURL) as if the source had failed."""
    settings = Settings.from_env({})
    message = r"^not a valid URL: Failed to parse: '2002:ac1a:ae17::127%1' is not a valid host$"
    with pytest.raises(BadRequest, match=message):
        download(make_session(settings), "https://[2002:ac1a:ae17::127%251]/a.jpg", settings)


class _Drip(http.server.BaseHTTPRequestHandler):
    """A source that sends its headers, then one byte every 0.2 s for a minute: never slow enough for a
    per-read timeout, never done."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "300")
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(300):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)


def test_the_download_deadline_holds_against_a_source_that_drips() -> None:
    settings = dataclasses.replace(Settings.from_env({}), download_deadline=1.0)
    started = time.monotonic()
    with (
        loopback_server(_Drip) as server,
        pytest.raises(UpstreamTimeout, match="the download took over 1 s"),
    ):
        download(
            make_session(settings, allowed=lambda _: True),
            f"http://127.0.0.1:{server.server_port}/",
            settings,
        )
    assert time.monotonic() - started < 30  # the source would take 60 s


class _Mirror(http.server.BaseHTTPRequestHandler):
    """The operator's mirror: `/a.jpg` is there; `/away` redirects to `Location` given in the query."""

    def do_GET(self) -> None:
        if self.path.startswith("/away?"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/away?"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"image")


def test_only_the_mirrors_origin_is_exempt_from_the_address_guard() -> None:
    """`make up` reaches its loopback mirror with the guard on: exactly the mirror's host and port pass;
    its other ports, other loopback addresses and where the mirror redirects are refused."""
    with loopback_server(_Mirror) as first, loopback_server(_Mirror) as second:
        mirror, other = (f"http://127.0.0.1:{server.server_port}" for server in (first, second))
        settings = Settings.from_env({"DANDELION_SOURCE_MIRROR": f"https://example.org/={mirror}/"})
        session = make_session(settings)
        assert download(session, f"{mirror}/a.jpg", settings) == b"image"
        for url in (
            f"{other}/a.jpg",
            f"http://localhost:{first.server_port}/a.jpg",
            f"{mirror}/away?{other}/a.jpg",
        ):
            with pytest.raises(URLRefused, match="which is not a public address"):
                download(session, url, settings)
