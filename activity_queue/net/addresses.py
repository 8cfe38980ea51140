"""Inbox URLs: their origin, and whether they are safe to send to."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import idna

from ..exceptions import UnsafeDestination

DEFAULT_PORTS = {"http": 80, "https": 443}


def ascii_host(host: str) -> str:
    """``host`` lower-cased, an internationalised name as punycode (IDNA 2008, UTS #46).

    ``bücher.example`` and ``xn--bcher-kva.example`` are one host for the
    per-host limits and the circuit breaker, and it is the form the HTTP
    client connects to. Plain ASCII names are only lower-cased, so names that
    IDNA would refuse but DNS allows (``my_host``) keep working. ValueError
    for an invalid internationalised name.
    """
    lowered = host.lower()
    if lowered.isascii() and not any(label.startswith("xn--") for label in lowered.split(".")):
        return lowered
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"{host!r} is not a valid internationalised host name: {exc}") from None


def origin(url: str) -> str:
    """``scheme://host[:port]``, lower-cased, default port omitted: the unit of per-host limits.

    Internationalised hosts are in punycode; an invalid one, which
    :func:`check_inbox` refuses, is only lower-cased, so that reading the
    origin of a received URL never fails on it.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    try:
        host = ascii_host(host)
    except ValueError:
        host = host.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def check_url(url: str) -> None:
    """Refuse what can never be an inbox: not http(s), no host, credentials, bad port."""
    if not isinstance(url, str) or not url:
        raise UnsafeDestination(f"inbox must be a non-empty URL string, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeDestination(f"inbox {url!r} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in DEFAULT_PORTS:
        raise UnsafeDestination(f"inbox {url!r} must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise UnsafeDestination(f"inbox {url!r} has no host")
    if parts.username or parts.password:
        raise UnsafeDestination(f"inbox {url!r} must not carry credentials")
    if port == 0:
        raise UnsafeDestination(f"inbox {url!r} has port 0")


def check_inbox(url: str) -> None:
    """:func:`check_url`, and what an inbox we store, sign and compare must not carry,
    nor an invalid internationalised host name, which no HTTP client can connect to.

    A fragment is never sent, so ``…/inbox#a`` and ``…/inbox`` would be two
    queue rows for one inbox; control characters are dropped or refused by
    URL parsers and HTTP clients in ways that differ from what was stored.
    """
    if isinstance(url, str) and any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise UnsafeDestination(f"inbox {url[:100]!r} contains control characters")
    if isinstance(url, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in url):
        # Not text: no database stores it (UTF-8 has no encoding for it), no client sends it.
        raise UnsafeDestination(f"inbox {url[:100]!r} contains an unpaired surrogate "
                                "(not a character); decode the URL properly")
    check_url(url)
    if "#" in url:
        raise UnsafeDestination(f"inbox {url[:100]!r} has a fragment ('#…'); an inbox URL "
                                "has none")
    try:
        ascii_host(urlsplit(url).hostname or "")
    except ValueError as exc:
        raise UnsafeDestination(f"inbox {url[:100]!r}: {exc}") from None


def forbidden_address(address: str) -> str | None:
    """Why an IP address is off limits for outbound deliveries, or None when it is public.

    The specific kinds are tested before "private", which Python also sets for
    link-local, unspecified and reserved ranges; anything else not globally
    routable (carrier-grade NAT space, where some clouds keep their metadata
    service) is refused too.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    for label, test in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("non-global", not ip.is_global),
    ):
        if test:
            return label
    return None


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_literal_address(url: str, allow_private: bool) -> None:
    """IP literals never reach the resolver, so they are checked here."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    if not is_ip_literal(host):
        return
    kind = forbidden_address(host)
    if kind:
        raise UnsafeDestination(
            f"{host} is {article(kind)} {kind} address; "
            "set ACTIVITY_QUEUE['ALLOW_PRIVATE_ADDRESSES'] to deliver there"
        )
