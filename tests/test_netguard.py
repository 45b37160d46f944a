"""SSRF guard: address classes, numeric spellings, zero connections to blocked servers."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_server import HostileServer

from newsq import errors
from newsq.config.settings import AllowPrivate, Settings
from newsq.fetch.client import Fetcher
from newsq.fetch.netguard import (
    GuardedBackend,
    Refused,
    check_address,
    is_public,
    numeric_ipv4,
    prepare,
)


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7F.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("192.168.257", "192.168.1.1"),
        ("0", "0.0.0.0"),
    ],
)
def test_numeric_spellings_read_like_inet_aton(spelling: str, address: str) -> None:
    assert numeric_ipv4(spelling) == ipaddress.IPv4Address(address)


@pytest.mark.parametrize("spelling", ["999.1.1.1", "1.2.3.4.5", "0x1ffffffff", "08.0.0.1"])
def test_impossible_numeric_hosts_are_invalid(spelling: str) -> None:
    with pytest.raises(Refused) as info:
        prepare(f"http://{spelling}/", AllowPrivate())
    assert info.value.reason in (errors.INVALID_URL, errors.BLOCKED_ADDRESS)


def test_names_are_not_numeric() -> None:
    assert numeric_ipv4("example.com") is None
    assert numeric_ipv4("1.2.3.com") is None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        # what is_global lets through
        "fec0::1",  # site-local
        "feff:ffff::1",
        "ff0e::1",  # global-scope multicast
        "239.255.255.250",
        "3fff::1",  # documentation
        # IPv4 inside IPv6, each form
        "::ffff:169.254.169.254",  # mapped
        "::10.0.0.1",  # compatible (deprecated)
        "::8.8.8.8",
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::1",
        "64:ff9b::10.0.0.1",  # NAT64 of 10.0.0.1
        "64:ff9b::192.168.1.1",
        "64:ff9b:1::808:808",  # local-use NAT64
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo
        "2001:0:a00:1::1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "8.8.8.8",
        "2606:4700::1111",
        "1.1.1.1",
        "::ffff:8.8.8.8",  # a public IPv4 address, however spelt
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
    ],
)
def test_public_addresses(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


_SITE_LOCAL_SERVER = """
import socket, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
# nodad: the address is usable at once, not tentative until the kernel's DAD work runs
subprocess.run(["ip", "addr", "add", "fec0::1/128", "dev", "lo", "nodad"], check=True)
server = socket.create_server(("fec0::1", 8080), family=socket.AF_INET6)
socket.create_connection(("fec0::1", 8080), timeout=1).close()  # it is reachable
server.accept()[0].close()
server.settimeout(0.2)
from newsq.config.settings import Settings
from newsq.fetch.client import Fetcher
with Fetcher(Settings(fetch_timeout=2.0)) as fetcher:
    print(fetcher.fetch("http://[fec0::1]:8080/").reason)
    backend = fetcher._backend
    try:
        backend.connect_tcp("fec0::1", 8080, timeout=1)
        print("connected")
    except Exception as exc:
        print(type(exc).__name__)
try:
    server.accept()
    print("accepted a connection")
except TimeoutError:
    print("no connection")
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_site_local_server_is_never_connected_to() -> None:
    # fec0::1 on the loopback of a network namespace of its own: a real, reachable
    # server at a site-local address, which the guard must refuse before connecting
    run = subprocess.run(
        ["unshare", "-rn", sys.executable, "-c", _SITE_LOCAL_SERVER],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if run.returncode and "unshare" in run.stderr:
        pytest.skip(f"no network namespace here: {run.stderr.strip()}")
    expected = [errors.BLOCKED_ADDRESS, "BlockedAddress", "no", "connection"]
    assert run.stdout.split() == expected, run.stderr


def test_localhost_name_resolves_to_blocked_addresses() -> None:
    backend = GuardedBackend(AllowPrivate())
    try:
        with pytest.raises(Refused) as info:
            backend.connect_tcp("localhost", 80, timeout=1)
        assert info.value.reason == errors.BLOCKED_ADDRESS
    finally:
        backend.close()


@pytest.fixture
def two_servers() -> Iterator[tuple[HostileServer, HostileServer]]:
    """An allowed server and a blocked one (the fetcher may reach only the first)."""
    with HostileServer() as allowed, HostileServer() as blocked:
        yield allowed, blocked


def _fetcher(allow: AllowPrivate) -> Fetcher:
    return Fetcher(Settings(allow_private=allow, fetch_timeout=2.0))


def test_blocked_spellings_open_no_connection(
    two_servers: tuple[HostileServer, HostileServer],
) -> None:
    allowed, blocked = two_servers
    port = blocked.port
    spellings = [
        f"http://127.0.0.1:{port}/ok",
        f"http://localhost:{port}/ok",
        f"http://2130706433:{port}/ok",
        f"http://0x7f000001:{port}/ok",
        f"http://127.1:{port}/ok",
        f"http://0177.0.0.1:{port}/ok",
        f"http://[::ffff:127.0.0.1]:{port}/ok",
        f"http://[::1]:{port}/ok",
    ]
    with _fetcher(AllowPrivate(host_ports=frozenset({("127.0.0.1", allowed.port)}))) as f:
        for url in spellings:
            assert f.fetch(url).reason == errors.BLOCKED_ADDRESS, url
        assert f.fetch(allowed.url("/ok")).ok  # the allow-list entry works
    assert blocked.connections == 0


def test_redirect_to_blocked_server_opens_no_connection(
    two_servers: tuple[HostileServer, HostileServer],
) -> None:
    allowed, blocked = two_servers
    allow = AllowPrivate(host_ports=frozenset({("127.0.0.1", allowed.port)}))
    with _fetcher(allow) as f:
        for target in (blocked.url("/ok"), f"http://2130706433:{blocked.port}/ok"):
            result = f.fetch(allowed.url(f"/redirect-to?url={target}"))
            assert (result.reason, result.redirects) == (errors.BLOCKED_ADDRESS, 1)
    assert allowed.connections >= 1
    assert blocked.connections == 0


def test_default_settings_block_everything_local(
    two_servers: tuple[HostileServer, HostileServer],
) -> None:
    allowed, blocked = two_servers
    with _fetcher(AllowPrivate()) as f:
        assert f.fetch(allowed.url("/ok")).reason == errors.BLOCKED_ADDRESS
        assert f.fetch(blocked.url("/ok")).reason == errors.BLOCKED_ADDRESS
    assert allowed.connections == blocked.connections == 0


def test_cidr_allow_list_opens_the_network(
    two_servers: tuple[HostileServer, HostileServer],
) -> None:
    allowed, _ = two_servers
    allow = AllowPrivate(networks=(ipaddress.ip_network("127.0.0.0/8"),))
    with _fetcher(allow) as f:
        assert f.fetch(allowed.url("/ok")).ok
        assert f.fetch("http://10.0.0.1/").reason == errors.BLOCKED_ADDRESS


OPENED_BY_ONE = ["169.254.169.254", "224.0.0.1", "0.0.0.0", "240.0.0.1", "fe80::1", "ff02::1"]


def test_allow_private_1_opens_every_address_and_the_readme_says_so() -> None:
    opened, listed = AllowPrivate.parse("1"), AllowPrivate.parse("127.0.0.0/8")
    for address in OPENED_BY_ONE:
        ip = ipaddress.ip_address(address)
        assert not is_public(ip)
        check_address(ip, 80, address, opened)  # no BlockedAddress: 1 means all of them
        with pytest.raises(Refused):
            check_address(ip, 80, address, listed)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith("| `NEWSQ_ALLOW_PRIVATE`")]
    for said in ("`1` opens everything", "169.254.169.254", "multicast", "0.0.0.0"):
        assert said in row


class _RebindingDns:
    """``socket.getaddrinfo`` for one name whose answers change between lookups, as a
    DNS-rebinding server's do (the network edge: other names resolve for real)."""

    def __init__(self, name: str, answers: list[list[str]]) -> None:
        self.name, self.answers, self.lookups = name, answers, 0
        self.real = socket.getaddrinfo

    def __call__(self, host: str, port: int, *args: object) -> list[tuple[object, ...]]:
        if host != self.name:
            return self.real(host, port, *args)  # type: ignore[arg-type]
        answer = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answer]


PUBLIC = "93.184.216.34"  # a public address: the guard lets it through


def test_a_mixed_answer_is_refused_whatever_its_order(
    two_servers: tuple[HostileServer, HostileServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, blocked = two_servers
    for answer in ([PUBLIC, "127.0.0.1"], ["127.0.0.1", PUBLIC]):
        dns = _RebindingDns("mixed.test", [answer])
        monkeypatch.setattr(socket, "getaddrinfo", dns)
        with _fetcher(AllowPrivate()) as f:
            assert f.fetch(f"http://mixed.test:{blocked.port}/ok").reason == errors.BLOCKED_ADDRESS
        assert dns.lookups == 1
    assert blocked.connections == 0


def test_a_rebinding_name_is_looked_up_once_and_its_checked_address_used(
    two_servers: tuple[HostileServer, HostileServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first answer is public and passes the check; every later one is loopback.
    The connection goes to the checked address (unreachable here, so the fetch fails
    as a network error), never to the loopback server a second lookup would give."""
    _, blocked = two_servers
    dns = _RebindingDns("rebind.test", [[PUBLIC], ["127.0.0.1"]])
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    with Fetcher(Settings(allow_private=AllowPrivate(), fetch_timeout=1.0)) as f:
        result = f.fetch(f"http://rebind.test:{blocked.port}/ok")
    assert not result.ok
    assert result.reason != errors.BLOCKED_ADDRESS  # the address it checked was public
    assert dns.lookups == 1
    assert blocked.connections == 0
