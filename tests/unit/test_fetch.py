import pytest

from functions.lib.errors import BadRequest
from functions.lib.fetch import check_url, is_public


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
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert is_public(address) is False


@pytest.mark.parametrize("address", ["185.199.108.133", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public(address) is True


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a.jpg", "file:///etc/passwd", "example.com/a.jpg", "http:///a.jpg", "gopher://x/"],
)
def test_only_absolute_http_urls(url: str) -> None:
    with pytest.raises(BadRequest, match="only absolute http and https URLs"):
        check_url(url)
