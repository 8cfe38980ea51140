"""Which key signs what: the key of each activity's ``actor``, else the instance actor's.

Mastodon-family receivers fetch the ``keyId`` of a signed delivery and refuse
it unless the key's owner is the activity's ``actor``. A site whose users
are actors therefore names, in ``ACTOR_KEYS``, a callable
``f(actor_id) -> (private_key_pem, key_id) | None``; an activity whose actor
it answers for is signed with that actor's key, any other with the site key
(``SIGNING_KEY``, owned by the instance actor that :mod:`activity_queue.urls`
serves). The same site key signs our fetches (inbox discovery, key
documents), so that servers in authorized-fetch mode answer them.

The worker resolves keys on its database side, where the callable may query
the site's models, and hands each job its signer (:attr:`Job.signer`).
Loaded keys are cached: parsing an RSA key costs far more than a signature.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ..conf import Config, get_config
from ..net import signatures
from ..net.signing import Signer, Unusable
from .jobs import Job

logger = logging.getLogger(__name__)

#: What ActivityPub asks a client to send when it fetches an object.
ACCEPT = ('application/ld+json; profile="https://www.w3.org/ns/activitystreams", '
          "application/activity+json")
#: What a signed GET covers (no body, so no digest), as Mastodon-family servers expect.
FETCH_HEADERS = ("(request-target)", "host", "date")
#: Seconds an actor's answer from ``ACTOR_KEYS`` is reused, and how many are kept.
ANSWER_TTL = 60.0
ANSWERS_KEPT = 4096


@lru_cache(maxsize=1024)
def load_signer(private_key: str, key_id: str) -> Signer:
    """The signer of a PEM key (or the path of one) as ``key_id``; ValueError if unusable."""
    if not isinstance(key_id, str) or '"' in key_id or urlsplit(key_id).scheme not in (
            "http", "https"):
        raise ValueError(f"the key id {str(key_id)[:200]!r} is not an http(s) URL")
    return Signer(signatures.load_private_key(private_key), key_id)


def site_signer(config: Config | None = None) -> Signer | None:
    """The instance actor's signer (``SIGNING_KEY``); None when signing is off.

    Raises ImproperlyConfigured when the key is set but unusable.
    """
    cfg = config or get_config()
    if not cfg.SIGNING_KEY:
        return None
    key_id = signatures.required_key_id(cfg)
    try:
        return load_signer(cfg.SIGNING_KEY, key_id)
    except ValueError as exc:
        raise ImproperlyConfigured(f"ACTIVITY_QUEUE['SIGNING_KEY']: {exc}") from None


def actor_of(activity: Any) -> str | None:
    """The id of an activity's ``actor`` (a URL, or a node with ``id`` / ``@id``)."""
    if not isinstance(activity, dict):
        return None
    actor = activity.get("actor")
    if isinstance(actor, list) and len(actor) == 1:
        actor = actor[0]
    if isinstance(actor, dict):
        actor = actor.get("id") or actor.get("@id")
    return actor if isinstance(actor, str) and actor else None


class ActorKeys:
    """Resolves the signer of each job, for one worker (``ACTOR_KEYS`` read once)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lookup: Callable[[str], Any] | None = None
        self._broken = ""
        self._answers: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        if config.ACTOR_KEYS:
            try:
                found = import_string(config.ACTOR_KEYS)
            except ImportError as exc:
                self._broken = f"ACTIVITY_QUEUE['ACTOR_KEYS'] cannot be imported: {exc}"
            except Exception as exc:  # the site's module raised as it was imported
                self._broken = (f"ACTIVITY_QUEUE['ACTOR_KEYS'] cannot be imported: "
                                f"{type(exc).__name__}: {exc}")
            else:
                if callable(found):
                    self._lookup = found
                else:
                    self._broken = "ACTIVITY_QUEUE['ACTOR_KEYS'] is not callable"
            if self._broken:
                logger.error("activity_queue: %s; deliveries wait until it is fixed",
                             self._broken)

    @property
    def enabled(self) -> bool:
        return bool(self.config.ACTOR_KEYS)

    def assign(self, jobs: Iterable[Job]) -> None:
        """Give each job the signer of its activity's actor (None: the worker's own).

        The jobs of one fan-out share their body, so each body is read once.
        """
        if not self.enabled:
            return
        by_body: dict[int, Any] = {}
        for job in jobs:
            key = id(job.body)
            if key not in by_body:
                try:
                    actor = actor_of(json.loads(job.body))
                except (ValueError, RecursionError):
                    actor = None
                by_body[key] = self.signer_for(actor) if actor else None
            job.signer = by_body[key]

    def signer_for(self, actor: str) -> Signer | None:
        """The signer of ``actor``'s activities; None when the site key is to sign them."""
        if self._broken:
            return Unusable(self._broken)
        try:
            answer = self._answer(actor)
        except Exception as exc:
            logger.exception("activity_queue: ACTOR_KEYS failed for %s", actor)
            return Unusable(f"ACTIVITY_QUEUE['ACTOR_KEYS'] failed for {actor[:200]}: "
                           f"{type(exc).__name__}: {exc}")
        if answer is None:
            return None
        if (not isinstance(answer, tuple | list) or len(answer) != 2
                or not all(isinstance(part, str) for part in answer)):
            return Unusable(f"ACTIVITY_QUEUE['ACTOR_KEYS'] answered {type(answer).__name__} "
                           f"for {actor[:200]}, not (private_key_pem, key_id) or None")
        try:
            return load_signer(answer[0], answer[1])
        except ValueError as exc:
            return Unusable(f"the key of {actor[:200]} from ACTOR_KEYS cannot be used: {exc}")

    def _answer(self, actor: str) -> Any:
        """The callable's answer, reused for ``ANSWER_TTL`` seconds: a batch of deliveries
        by a few actors costs a few calls, and a rotated key is picked up soon after."""
        now = time.monotonic()
        hit = self._answers.get(actor)
        if hit is not None and hit[0] > now:
            return hit[1]
        answer = self._lookup(actor)
        self._answers[actor] = (now + ANSWER_TTL, answer)
        self._answers.move_to_end(actor)
        while len(self._answers) > ANSWERS_KEPT:
            self._answers.popitem(last=False)
        return answer


# -- signed fetches ---------------------------------------------------------------


def fetch_headers(url: str, config: Config | None = None,
                  accept: str | None = None) -> tuple[str, dict[str, str]]:
    """The URL as ``requests`` will send it, and the headers of a GET of it (``Accept``:
    an ActivityStreams document unless told), signed by the instance actor when
    ``SIGNING_KEY`` is set.

    Servers in authorized-fetch mode (GoToSocial by default, Mastodon with
    ``AUTHORIZED_FETCH``) answer an unsigned GET with 401. An unusable key
    leaves the fetch unsigned (the system checks report the key).
    """
    cfg = config or get_config()
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    url = prepared.url
    headers = {"Accept": accept or ACCEPT, "User-Agent": cfg.USER_AGENT}
    try:
        signer = site_signer(cfg)
    except ImproperlyConfigured as exc:
        logger.warning("activity_queue: fetching %s unsigned: %s", url[:200], exc)
        return url, headers
    if signer is None:
        return url, headers
    return url, {**headers, **sign_get(url, signer)}


def sign_get(url: str, signer: Signer) -> dict[str, str]:
    """``Host``, ``Date`` and a draft-cavage ``Signature`` over ``(request-target) host date``.

    An RSA key signs ``rsa-sha256``, which every Mastodon-family server checks; an
    Ed25519 key signs ``hs2019``, whose algorithm the receiver takes from the key.
    """
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    values = {"host": parts.netloc.rpartition("@")[2], "date": signatures.http_date()}
    text = signatures.signing_string(f"get {target}", values, FETCH_HEADERS).encode()
    key = signer.private_key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature, algorithm = key.sign(text), "hs2019"
    else:
        signature, algorithm = key.sign(text, padding.PKCS1v15(), hashes.SHA256()), "rsa-sha256"
    encoded = base64.b64encode(signature).decode()
    return {
        "Host": values["host"], "Date": values["date"],
        "Signature": f'keyId="{signer.key_id}",algorithm="{algorithm}",'
                     f'headers="{" ".join(FETCH_HEADERS)}",signature="{encoded}"',
    }
