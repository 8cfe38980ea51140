"""Which key signs what: the key of each activity's ``actor``, else the instance actor's.

Mastodon-family receivers fetch the ``keyId`` of a signed delivery and refuse
it unless the key's owner is the activity's ``actor``. A site whose users
are actors therefore names, in ``ACTOR_KEYS``, a callable
``f(actor_id) -> (private_key_pem, key_id) | None``; an activity whose actor
it answers for is signed with that actor's key, any other with the site key
(``SIGNING_KEY``, owned by the instance actor that :mod:`activity_queue.urls`
serves).

The worker resolves keys on its database side, where the callable may query
the site's models, and hands each job its signer (:attr:`Job.signer`).
Loaded keys are cached: parsing an RSA key costs far more than a signature.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from django.utils.module_loading import import_string

from ..conf import Config, import_failure
from ..net.signing import Signer, Unusable, load_signer
from .jobs import Job

logger = logging.getLogger(__name__)

#: Seconds an actor's answer from ``ACTOR_KEYS`` is reused, and how many are kept.
ANSWER_TTL = 60.0
ANSWERS_KEPT = 4096


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
            except Exception as exc:  # the site's module may raise as it is imported
                self._broken = ("ACTIVITY_QUEUE['ACTOR_KEYS'] cannot be imported: "
                                f"{import_failure(exc)}")
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
