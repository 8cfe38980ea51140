"""Finding a remote resource's inbox.

The resource document (its urlid, fetched as JSON-LD) names the inbox in its
``inbox`` or ``ldp:inbox`` property. The answer is cached for
``DISCOVERY_TTL`` seconds in the ``DISCOVERY_CACHE`` cache. A document that
cannot be read (4xx, not JSON, too large, no inbox property) falls back to
the DjangoLDP convention, the resource's origin plus ``/inbox/``. Only
transient failures (connection errors, timeouts, 408/429/5xx) raise
:class:`DiscoveryFailed` with ``retryable`` set, so that the caller retries
later; a refused destination raises it without.

The GET is signed by the instance actor when ``SIGNING_KEY`` is set, since
servers in authorized-fetch mode refuse unsigned ones (and the fallback would
then be a guess). ``requests`` does the fetch: discovery is rare (once per
resource per TTL) and synchronous, and happens outside request handling (see
:mod:`activity_queue.federation.dispatch`).
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from django.core.cache import caches

from ..conf import Config, get_config
from ..exceptions import ActivityQueueError, UnsafeDestination
from ..net.addresses import (
    check_inbox,
    check_literal_address,
    check_url,
    forbidden_address,
    origin,
)
from ..net.deadline import Deadline
from ..net.signing import fetch_headers
from ..sending.retry import RETRYABLE_STATUSES

INBOX_KEYS = ("inbox", "ldp:inbox", "http://www.w3.org/ns/ldp#inbox", "as:inbox",
              "https://www.w3.org/ns/activitystreams#inbox")
MAX_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class DiscoveryFailed(ActivityQueueError):
    """The resource document could not be fetched; ``retryable`` says whether to try again."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def fallback_inbox(resource: str) -> str:
    """The DjangoLDP convention: ``<origin>/inbox/``."""
    return origin(resource) + "/inbox/"


def inbox_from_document(document: Any, base: str) -> str | None:
    """The inbox a JSON-LD document names, absolute and checked, or None."""
    if not isinstance(document, dict):
        return None
    for key in INBOX_KEYS:
        value = document.get(key)
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, dict):
            value = value.get("@id") or value.get("id")
        if isinstance(value, str) and value:
            url = urljoin(base, value)
            try:
                check_inbox(url)  # what enqueue() would refuse is no inbox
            except UnsafeDestination:
                continue
            return url
    return None


def _cache_key(resource: str) -> str:
    return "activity_queue:inbox:" + hashlib.sha256(resource.encode()).hexdigest()


def cached_inbox(resource: str) -> str | None:
    """The inbox of ``resource`` if it is cached; never touches the network."""
    return caches[get_config().DISCOVERY_CACHE].get(_cache_key(resource))


def remember(resource: str, inbox: str) -> None:
    cfg = get_config()
    caches[cfg.DISCOVERY_CACHE].set(_cache_key(resource), inbox, cfg.DISCOVERY_TTL)


def forget(resource: str) -> None:
    caches[get_config().DISCOVERY_CACHE].delete(_cache_key(resource))


def inbox_for(resource: str, *, session: requests.Session | None = None) -> str:
    """The inbox of ``resource``: cached, else discovered (and cached), else the fallback.

    Raises :class:`DiscoveryFailed` when the document could not be fetched.
    """
    inbox = cached_inbox(resource)
    if inbox:
        return inbox
    document = fetch_document(resource, session=session)
    inbox = inbox_from_document(document, resource) or fallback_inbox(resource)
    remember(resource, inbox)
    return inbox


def guard(url: str, allow_private: bool) -> None:
    """Refuse URLs that are not http(s) or whose host resolves to a forbidden address.

    Every address of the name is checked, since ``requests`` may use any of
    them. (A DNS answer could still change between this check and the
    connection; deliveries, which matter more, check at connection time.)
    """
    try:
        check_url(url)
    except UnsafeDestination as exc:
        raise DiscoveryFailed(str(exc), retryable=False) from None
    try:
        check_literal_address(url, allow_private)
    except UnsafeDestination as exc:
        raise DiscoveryFailed(f"refused: {exc}", retryable=False) from None
    if allow_private:
        return
    parts = urlsplit(url)
    try:
        answers = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # a name IDNA cannot encode (an empty or too long label)
        raise DiscoveryFailed(f"cannot resolve {parts.hostname}: {exc}",
                              retryable=False) from None
    except OSError as exc:
        raise DiscoveryFailed(f"cannot resolve {parts.hostname}: {exc}", retryable=True) from None
    for answer in answers:
        kind = forbidden_address(answer[4][0])
        if kind:
            raise DiscoveryFailed(
                f"refused: {parts.hostname} resolves to a {kind} address; "
                "set ACTIVITY_QUEUE['ALLOW_PRIVATE_ADDRESSES'] to fetch from there",
                retryable=False,
            )


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a GET found: the final status and, for a readable 2xx, the parsed JSON."""

    url: str
    status: int
    document: Any = None


def fetch_document(url: str, *, config: Config | None = None,
                   session: requests.Session | None = None) -> Any:
    """GET ``url`` as JSON-LD; the parsed document, or None when it cannot be read.

    Raises :class:`DiscoveryFailed` for transient failures (retryable) and
    refused destinations (not retryable).
    """
    return fetch(url, config=config, session=session).document


def fetch(url: str, *, config: Config | None = None, session: requests.Session | None = None,
          accept: str | None = None, timeout: float | None = None) -> Fetched:
    """GET ``url`` with the outbound safety rules (addresses, redirects, size, time).

    Each connect and read may take ``TIMEOUT``, and the whole fetch, redirects
    included, ``timeout`` (default ``3 * TIMEOUT``) however slowly the server
    answers: a server that trickles its answer holds neither a request waiting
    on it nor a discovery thread. A given ``session`` times each read only.
    Raises as :func:`fetch_document` does.
    """
    cfg = config or get_config()
    if session is not None:
        return _fetch(url, cfg, session, accept, None)
    with Deadline(cfg.TIMEOUT * 3 if timeout is None else timeout) as deadline:
        return _fetch(url, cfg, deadline.session, accept, deadline)


def _fetch(url: str, cfg: Config, http: Any, accept: str | None,
           deadline: Deadline | None) -> Fetched:
    wait, budget = cfg.TIMEOUT, cfg.TIMEOUT * 3
    for _hop in range(MAX_REDIRECTS + 1):
        if deadline is not None:
            budget = deadline.remaining()
            wait = min(cfg.TIMEOUT, budget)
            if budget <= 0 or deadline.expired:
                raise _late(url, deadline)
        guard(url, cfg.ALLOW_PRIVATE_ADDRESSES)
        try:
            url, headers = fetch_headers(url, cfg, accept)  # signed by the instance actor
            with http.get(url, headers=headers, timeout=(wait, wait),
                          stream=True, allow_redirects=False) as resp:
                status = resp.status_code
                if status in REDIRECTS and resp.headers.get("Location"):
                    url = urljoin(url, resp.headers["Location"])
                    continue
                if status in RETRYABLE_STATUSES:
                    raise DiscoveryFailed(f"HTTP {status} from {url}", retryable=True)
                if not 200 <= status < 300:
                    return Fetched(url, status)
                if deadline is not None:
                    budget = deadline.remaining()
                body = _read_capped(resp, cfg.DISCOVERY_MAX_BYTES, budget)
        except requests.RequestException as exc:
            if deadline is not None and deadline.expired:
                raise _late(url, deadline) from None
            raise DiscoveryFailed(f"{type(exc).__name__}: {exc}", retryable=True) from None
        except ValueError as exc:  # a Location that is no URL (requests reads it, too)
            raise DiscoveryFailed(f"{url[:200]} gave an unusable answer: {exc}",
                                  retryable=False) from None
        if deadline is not None and deadline.expired:  # a body without a length, cut short
            raise _late(url, deadline)
        if body is None:
            return Fetched(url, status)
        try:
            return Fetched(url, status, json.loads(body))
        except (ValueError, RecursionError):
            return Fetched(url, status)
    return Fetched(url, status)


def _late(url: str, deadline: Deadline) -> DiscoveryFailed:
    return DiscoveryFailed(f"no answer from {url} within {deadline.seconds:g} s",
                           retryable=True)


def _read_capped(resp: requests.Response, limit: int, budget: float) -> bytes | None:
    """At most ``limit`` bytes within ``budget`` seconds; None when the body is larger."""
    deadline = time.monotonic() + budget
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise DiscoveryFailed(f"{resp.url} took more than {budget:.0f}s to send",
                                  retryable=True)
    return b"".join(chunks)
