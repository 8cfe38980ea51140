"""Outbound safety: no deliveries to loopback, private, link-local or multicast addresses.

The test settings allow private addresses (the receiver is on loopback); the
tests here turn the guard back on.
"""

import asyncio
import re
import socket

import pytest

from activity_queue import enqueue
from activity_queue.exceptions import InvalidActivity, UnsafeDestination
from activity_queue.models import Activity, ScheduledActivity
from activity_queue.net import addresses
from activity_queue.net.addresses import check_literal_address, forbidden_address
from activity_queue.sending import transport as delivery
from activity_queue.sending.transport import GuardedResolver

from ..support.helpers import aq_settings
from ..support.receiver import Receiver, Rule

NOTE = {"type": "Create", "object": "https://here.example/notes/1"}
HINT = "set ACTIVITY_QUEUE['ALLOW_PRIVATE_ADDRESSES'] to deliver there"


def guarded_step(worker):
    with aq_settings(ALLOW_PRIVATE_ADDRESSES=False):
        return worker().run_once(timeout=20)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("host", "refusal"), [
    ("127.0.0.1", "127.0.0.1 is a loopback address"),
    ("localhost", "localhost resolves only to loopback addresses"),
    ("[::1]", "::1 is a loopback address"),
    ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1 is a loopback address"),
    ("0.0.0.0", "0.0.0.0 is an unspecified address"),
    ("10.1.2.3", "10.1.2.3 is a private address"),
    ("192.168.0.10", "192.168.0.10 is a private address"),
    ("169.254.169.254", "169.254.169.254 is a link-local address"),
    ("224.0.0.1", "224.0.0.1 is a multicast address"),
    ("100.100.100.200", "100.100.100.200 is a non-global address"),
])
def test_private_destinations_are_final_failures(receiver, worker, host, refusal):
    enqueue(NOTE, to=f"http://{host}:{receiver.port}/inbox/")
    report = guarded_step(worker)
    assert (report.failed, report.retried) == (1, 0)
    assert not ScheduledActivity.objects.exists()
    log = Activity.objects.get()
    assert log.status == "failed"
    assert log.status_code is None
    assert log.error == f"refused: {refusal}; {HINT}"
    assert receiver.received == []


@pytest.fixture
def public_loopback(monkeypatch):
    """Treat 127.0.0.2 as if it were a public address, every other address as usual.

    No public address can be reached from here, so the one a redirect starts
    from is simulated; the guard's rules stay in force for everything else.
    """
    real = forbidden_address

    def guard(address: str) -> str | None:
        return None if address == "127.0.0.2" else real(address)

    monkeypatch.setattr(delivery, "forbidden_address", guard)
    monkeypatch.setattr(addresses, "forbidden_address", guard)
    server = Receiver(host="127.0.0.2").start()
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_public_destination_is_delivered_with_the_guard_on(public_loopback, worker):
    enqueue(NOTE, to=public_loopback.url("/inbox/"))
    assert guarded_step(worker).sent == 1
    assert len(public_loopback.received) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("target", "refusal"), [
    ("http://127.0.0.1:{port}/inbox/", "127.0.0.1 is a loopback address"),
    ("http://localhost:{port}/inbox/", "localhost resolves only to loopback addresses"),
])
def test_redirect_to_a_private_address_is_refused(public_loopback, receiver, worker, target,
                                                  refusal):
    public_loopback.rules["/inbox/"] = Rule(
        status=307, headers={"Location": target.format(port=receiver.port)})
    enqueue(NOTE, to=public_loopback.url("/inbox/"))
    report = guarded_step(worker)
    assert report.failed == 1
    assert Activity.objects.get().error == f"refused: {refusal}; {HINT}"
    assert len(public_loopback.received) == 1
    assert receiver.received == []


@pytest.mark.parametrize("url", [
    "ftp://remote.example/inbox/", "file:///etc/passwd", "gopher://remote.example/",
    "javascript:alert(1)", "data:text/plain,hi", "//remote.example/inbox/", "remote.example",
])
def test_non_http_schemes_are_refused_at_enqueue(url):
    with pytest.raises(InvalidActivity, match="must be http or https"):
        enqueue(NOTE, to=url)


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.255.0.1", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"), ("2002:7f00:1::1", "loopback"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
    ("fc00::1", "private"), ("::ffff:10.0.0.1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "non-global"), ("192.0.2.1", "private"),
    ("93.184.215.14", None), ("8.8.8.8", None), ("2001:4860:4860::8888", None),
])
def test_forbidden_address(address, kind):
    assert forbidden_address(address) == kind


@pytest.mark.parametrize(("url", "refused"), [
    ("http://127.0.0.1/inbox/", True),
    ("http://[::1]:8080/inbox/", True),
    ("https://10.0.0.1/inbox/", True),
    ("https://93.184.215.14/inbox/", False),
    ("https://localhost/inbox/", False),  # a name: the resolver checks it
    ("https://remote.example/inbox/", False),
])
def test_check_literal_address(url, refused):
    if refused:
        with pytest.raises(UnsafeDestination, match=re.escape(HINT)):
            check_literal_address(url, allow_private=False)
    else:
        check_literal_address(url, allow_private=False)
    check_literal_address(url, allow_private=True)


class FixedResolver:
    """Answers every name with the given addresses, as a DNS server might."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.closed = False

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": a, "port": port, "family": family, "proto": 0,
                 "flags": socket.AI_NUMERICHOST} for a in self.addresses]

    async def close(self):
        self.closed = True


def resolve(resolver, host="remote.example"):
    return asyncio.run(resolver.resolve(host, 443))


def test_resolver_keeps_only_public_answers():
    inner = FixedResolver("10.0.0.5", "93.184.215.14", "127.0.0.1")
    answers = resolve(GuardedResolver(allow_private=False, inner=inner))
    assert [a["host"] for a in answers] == ["93.184.215.14"]


def test_resolver_refuses_a_name_with_only_private_answers():
    inner = FixedResolver("10.0.0.5", "127.0.0.1")
    with pytest.raises(UnsafeDestination,
                       match="remote.example resolves only to loopback/private addresses"):
        resolve(GuardedResolver(allow_private=False, inner=inner))


def test_resolver_lets_everything_through_when_allowed():
    inner = FixedResolver("10.0.0.5", "127.0.0.1")
    answers = resolve(GuardedResolver(allow_private=True, inner=inner))
    assert [a["host"] for a in answers] == ["10.0.0.5", "127.0.0.1"]


def test_resolver_closes_its_inner_resolver():
    inner = FixedResolver("93.184.215.14")
    asyncio.run(GuardedResolver(allow_private=False, inner=inner).close())
    assert inner.closed
