"""The ``ACTIVITY_QUEUE`` settings dict, merged over documented defaults.

Read through :func:`get_config` at call time, never at import time, so that
``override_settings`` in tests and late configuration both take effect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

#: The values of ``INBOX_UNSIGNED`` (docs/inbox.md says what each risks).
INBOX_UNSIGNED_MODES = ("verify", "require", "trust")

DEFAULTS: dict[str, Any] = {
    # Start the in-process worker from AppConfig.ready() in serving processes.
    "AUTOSTART": True,
    # Deliveries in flight at once, all hosts together.
    "WORKERS": 64,
    # Deliveries in flight at once to one host (scheme + host + port).
    "PER_HOST": 8,
    # Attempts before a retryable failure becomes final.
    "MAX_ATTEMPTS": 12,
    # Retry n waits BACKOFF_FACTOR * 2**(n-1) seconds (with jitter), capped by BACKOFF_MAX.
    "BACKOFF_FACTOR": 30.0,
    "BACKOFF_MAX": 6 * 3600.0,
    # Connect timeout and read timeout of one delivery, in seconds; 3x for the whole exchange.
    "TIMEOUT": 10.0,
    # How long a claimed row belongs to one worker before another may take it back.
    "LEASE": 300.0,
    # Deliver to loopback/private/link-local addresses (tests, local demos).
    "ALLOW_PRIVATE_ADDRESSES": False,
    # A Retry-After header is honoured up to this many seconds.
    "RETRY_AFTER_MAX": 24 * 3600.0,
    # Bytes of a response body read at most; the first RESPONSE_EXCERPT characters are kept.
    "MAX_RESPONSE_BYTES": 64 * 1024,
    "RESPONSE_EXCERPT": 1000,
    # Consecutive failures that pause a host, and the first pause in seconds
    # (doubling while probes keep failing, capped by BACKOFF_MAX).
    "CIRCUIT_THRESHOLD": 5,
    "CIRCUIT_COOLDOWN": 60.0,
    # Seconds a host may fail without a single answer before it is unavailable: its queued
    # deliveries fail, new ones fail at once, and it is only probed. None: never.
    "UNAVAILABLE_AFTER": 7 * 86400.0,
    # Rows claimed per database round trip.
    "BATCH_SIZE": 500,
    # How often an idle worker looks for due rows written by other processes, in seconds.
    "POLL_INTERVAL": 1.0,
    # How deliveries run: "thread" (in-process event loop), "celery" or "tasks" (Django's).
    "BACKEND": "thread",
    # The User-Agent of deliveries and fetches; None: ``activity_queue/<version> (+SITE_URL)``.
    "USER_AGENT": None,
    # -- the inbox (docs/inbox.md) --
    # Bodies above this many bytes are refused with 413 (declared or actually read).
    "INBOX_MAX_BYTES": 1024 * 1024,
    # Dotted paths of DRF authentication and permission classes for the inbox view.
    "INBOX_AUTHENTICATION": [],
    "INBOX_PERMISSIONS": [],
    # Refuse (401) requests without a valid HTTP Signature.
    "INBOX_REQUIRE_SIGNATURE": False,
    # What an activity that is unsigned, or signed by another origin than its object's, does:
    # "verify" (applied as the object's origin serves it), "require" (401) or "trust".
    "INBOX_UNSIGNED": "verify",
    # An activity without an ``id`` is a duplicate of an identical one received within
    # this many seconds, with nothing newer about the same object in between (0: never).
    "INBOX_DEDUP_WINDOW": 3600.0,
    # -- HTTP Signatures --
    # Our RSA private key (PEM text, or the path of a PEM file); deliveries are signed when set.
    "SIGNING_KEY": None,
    # The URL of our public key document; default SITE_URL + the app's key URL.
    "SIGNING_KEY_ID": None,
    # The scheme a delivery is signed with first, to a host that has not told us which
    # it accepts: "cavage" (draft-cavage) or "rfc9421"; None: draft-cavage for an RSA key,
    # RFC 9421 for an Ed25519 one. On a 401 the other follows.
    "SIGNATURE_SCHEME": None,
    # Threads of a worker that sign deliveries, off its event loop; None: two per core,
    # 0: sign on the loop.
    "SIGNING_THREADS": None,
    # A signed request's Date (or created) may be this many seconds off, either way.
    "SIGNATURE_MAX_AGE": 3600.0,
    # Seconds a sender's fetched public key is kept in Django's cache.
    "SIGNATURE_KEY_TTL": 3600.0,
    # Dotted path of ``f(actor_id) -> (private_key_pem, key_id) | None``: the key that signs
    # an activity of that actor; None (or no answer) falls back to SIGNING_KEY.
    "ACTOR_KEYS": None,
    # Prometheus metrics in prometheus_client's default registry (activity_queue[metrics]).
    "METRICS": False,
    # Days ``activity_prune`` keeps log rows; None keeps them forever.
    # SENT covers sent and dropped rows, FAILED covers failed and discarded ones.
    "RETENTION_SENT_DAYS": 30,
    "RETENTION_FAILED_DAYS": 90,
    "RETENTION_RECEIVED_DAYS": 30,
    # Federation (docs/federation.md). Send backlinks from the model signals.
    "BACKLINKS": True,
    # The site's JSON-LD context, second entry of every backlink's @context.
    "LD_CONTEXT": "https://cdn.startinblox.com/owl/context.jsonld",
    # How long a discovered inbox is trusted, in seconds, and which cache keeps it.
    "DISCOVERY_TTL": 24 * 3600.0,
    "DISCOVERY_CACHE": "default",
    # Bytes of a resource document read at most when looking for its inbox.
    "DISCOVERY_MAX_BYTES": 1024 * 1024,
    # Drop redundant activities when enqueuing and before sending (SPEC section 4).
    "DROP_REDUNDANT": True,
}


@dataclass(frozen=True, slots=True)
class Config:
    AUTOSTART: bool
    WORKERS: int
    PER_HOST: int
    MAX_ATTEMPTS: int
    BACKOFF_FACTOR: float
    BACKOFF_MAX: float
    TIMEOUT: float
    LEASE: float
    ALLOW_PRIVATE_ADDRESSES: bool
    RETRY_AFTER_MAX: float
    MAX_RESPONSE_BYTES: int
    RESPONSE_EXCERPT: int
    CIRCUIT_THRESHOLD: int
    CIRCUIT_COOLDOWN: float
    UNAVAILABLE_AFTER: float | None
    BATCH_SIZE: int
    POLL_INTERVAL: float
    BACKEND: str
    USER_AGENT: str
    INBOX_MAX_BYTES: int
    INBOX_AUTHENTICATION: list
    INBOX_PERMISSIONS: list
    INBOX_REQUIRE_SIGNATURE: bool
    INBOX_UNSIGNED: str
    INBOX_DEDUP_WINDOW: float
    SIGNING_KEY: str | None
    SIGNING_KEY_ID: str | None
    SIGNATURE_SCHEME: str | None
    SIGNING_THREADS: int | None
    SIGNATURE_MAX_AGE: float
    SIGNATURE_KEY_TTL: float
    ACTOR_KEYS: str | None
    METRICS: bool
    RETENTION_SENT_DAYS: int | None
    RETENTION_FAILED_DAYS: int | None
    RETENTION_RECEIVED_DAYS: int | None
    BACKLINKS: bool
    LD_CONTEXT: str
    DISCOVERY_TTL: float
    DISCOVERY_CACHE: str
    DISCOVERY_MAX_BYTES: int
    DROP_REDUNDANT: bool


def user_settings() -> dict[str, Any]:
    """The raw ``ACTIVITY_QUEUE`` value, for the system checks to inspect."""
    return getattr(settings, "ACTIVITY_QUEUE", None) or {}


@lru_cache(maxsize=1)
def get_config() -> Config:
    """Defaults overlaid with the site's values.

    Unknown keys and bad values are reported by the system checks; here they
    are ignored (unknown) or passed through, so that importing never crashes.
    """
    merged = dict(DEFAULTS)
    raw = user_settings()
    if isinstance(raw, dict):
        merged.update({k: v for k, v in raw.items() if k in DEFAULTS})
    if merged["USER_AGENT"] is None:
        merged["USER_AGENT"] = default_user_agent()
    if isinstance(merged["SIGNING_KEY"], os.PathLike):
        merged["SIGNING_KEY"] = os.fsdecode(merged["SIGNING_KEY"])
    return Config(**{f.name: merged[f.name] for f in fields(Config)})


def default_user_agent() -> str:
    """``activity_queue/<version> (+SITE_URL)``: receivers' operators see who sends, and
    where to look, in their logs."""
    try:
        release = version("activity_queue")
    except PackageNotFoundError:
        release = "0"
    site = getattr(settings, "SITE_URL", None)
    if isinstance(site, str) and site and header_problem(site) is None:
        return f"activity_queue/{release} (+{site})"
    return f"activity_queue/{release}"


def import_failure(exc: Exception) -> str:
    """Why a dotted path of the settings did not import. A module that raises while it is
    imported (a bug in the site's code) is reported like a missing one: raised from a
    check, it would crash ``check`` and, through ``checks.refusals``, every request of a
    server that starts the in-process worker on its first request."""
    return str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"


def header_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value, or None.

    Headers go out as Latin-1 bytes: a character beyond it cannot be sent at all, and a
    control character (C0, DEL, C1) would split or corrupt the header.
    """
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        return "contains control characters"
    if any(ord(c) > 255 for c in value):
        return "has characters outside Latin-1, which an HTTP header cannot carry"
    return None


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in ("ACTIVITY_QUEUE", "SITE_URL"):
        get_config.cache_clear()
