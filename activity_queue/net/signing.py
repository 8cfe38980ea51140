"""What the transport signs requests with: a :class:`Signer`, one private key and its keyId.

``signer(method, url, headers, body, scheme) -> headers`` returns the headers to send,
signed with either scheme the fediverse uses: ``"cavage"``
(draft-cavage-http-signatures, :mod:`.signatures`) or ``"rfc9421"`` (RFC 9421 HTTP
Message Signatures, :mod:`.rfc9421`). Both send ``Digest`` and ``Content-Digest``.

A signer is a plain value: the worker builds the site's from ``SIGNING_KEY`` and
``SIGNING_KEY_ID`` (:func:`signer_from_config`), and ``Transport.signer_for(job)``
picks the one that signs a job: the job's own (its actor's key, ``ACTOR_KEYS``),
else the site's. A signer is called from the worker's signing threads, so it keeps
no state between calls.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ..conf import Config
from . import rfc9421, signatures
from .signatures import SigningUnavailable

logger = logging.getLogger(__name__)

CAVAGE = "cavage"
RFC9421 = "rfc9421"
#: The two schemes; ``Host.signature_scheme`` holds one of them once a host has told us.
SCHEMES = (CAVAGE, RFC9421)
#: How each scheme is named in errors and docs.
NAMES = {CAVAGE: "draft-cavage", RFC9421: "RFC 9421"}


def other(scheme: str) -> str:
    """The scheme a double knock tries after ``scheme`` was refused."""
    return RFC9421 if scheme == CAVAGE else CAVAGE


class Signer:
    """Signs requests with ``private_key`` (RSA or Ed25519) as ``key_id``.

    ``key_id`` is the URL a receiver fetches the public key from: an actor's
    ``publicKey`` (or, for Ed25519, ``assertionMethod``) entry.
    """

    __slots__ = ("private_key", "key_id")

    def __init__(self, private_key: Any, key_id: str) -> None:
        if '"' in key_id:
            raise ValueError("a keyId cannot contain a double quote")
        rfc9421.algorithm_for(private_key)  # refuses a key type neither scheme signs with
        self.private_key = private_key
        self.key_id = key_id

    def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes,
                 scheme: str = CAVAGE) -> dict[str, str]:
        """``headers`` plus the signature headers of ``scheme`` (and ``Host``, ``Date``, the
        digests) for this request; ``url`` as sent (ASCII host, percent-encoded path)."""
        if scheme == RFC9421:
            return rfc9421.sign_headers(method, url, headers, body, key=self.private_key,
                                        key_id=self.key_id)
        return signatures.sign_headers(method, url, headers, body, key=self.private_key,
                                       key_id=self.key_id)

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"


class Unusable(Signer):
    """The signer of a configured key that cannot be used: it refuses to sign, so that
    deliveries wait (with the reason as their last error) instead of leaving unsigned."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.private_key, self.key_id, self.reason = None, "", reason

    def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes,
                 scheme: str = CAVAGE) -> dict[str, str]:
        raise SigningUnavailable(self.reason)


def signer_from_config(config: Config) -> Signer | None:
    """The site's signer: None unless ``SIGNING_KEY`` is configured.

    A key that is configured but unusable gives an :class:`Unusable` signer, and
    the worker's construction, which may happen inside a request, does not fail.
    The system checks report the same problem earlier.
    """
    try:
        found = signatures.signing_key(config)
        return Signer(*found) if found else None
    except (ImproperlyConfigured, ValueError) as exc:
        logger.error("activity_queue: %s; deliveries wait until it is fixed", exc)
        return Unusable(str(exc))
