"""The SSRF guard: which addresses a dataset URL may reach, decided after DNS resolution."""

from __future__ import annotations

import ipaddress

import pytest

from hubferry.dataset.addresses import AllowList, choose_address, forbidden_reason
from hubferry.dataset.testing import static_resolver
from hubferry.errors import ValidationError


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd12::1", "private"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("168.63.129.16", "metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("240.0.0.1", "reserved"), ("100.64.0.1", "not a public"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "metadata"),
    ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
])
def test_non_public_addresses_are_named_for_what_they_are(address, reason):
    found = forbidden_reason(ipaddress.ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass(address):
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def _choose(host: str, table: dict[str, list[str]], allow: tuple[str, ...] = ()) -> str:
    return choose_address(host, 443, AllowList.parse(allow), static_resolver(table), url=f"https://{host}/x.jpg")


def test_a_name_is_checked_by_what_it_resolves_to():
    assert _choose("photos.example", {"photos.example": ["93.184.216.34"]}) == "93.184.216.34"
    with pytest.raises(ValidationError) as caught:
        _choose("intranet.example", {"intranet.example": ["10.0.0.5"]})
    assert caught.value.context["code"] == "refused_address"
    assert "intranet.example (10.0.0.5)" in caught.value.message and "private" in caught.value.message
    assert "HUBFERRY_FETCH_ALLOW_HOSTS" in caught.value.hint


def test_one_private_address_among_public_ones_refuses_the_name():
    with pytest.raises(ValidationError, match="loopback"):
        _choose("mixed.example", {"mixed.example": ["93.184.216.34", "127.0.0.1"]})


def test_the_allow_list_opens_listed_hosts_addresses_and_networks_but_never_metadata():
    assert _choose("127.0.0.1", {}, allow=("127.0.0.1",)) == "127.0.0.1"
    assert _choose("files.lan", {"files.lan": ["10.9.9.9"]}, allow=("files.lan",)) == "10.9.9.9"
    assert _choose("files.lan", {"files.lan": ["10.9.9.9"]}, allow=("10.0.0.0/8",)) == "10.9.9.9"
    with pytest.raises(ValidationError, match="loopback"):
        _choose("localhost", {"localhost": ["127.0.0.1"]}, allow=("10.0.0.0/8",))
    with pytest.raises(ValidationError, match="metadata"):
        _choose("169.254.169.254", {}, allow=("169.254.0.0/16", "169.254.169.254"))


def test_unresolvable_hosts_are_refused_with_the_host_named():
    with pytest.raises(ValidationError, match="cannot resolve host nowhere.invalid"):
        _choose("nowhere.invalid", {})
