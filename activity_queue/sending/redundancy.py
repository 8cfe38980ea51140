"""The redundancy filter (SPEC section 4): which queued activities need not be sent.

Pure: it looks at the activities queued for one inbox about one object (plus
the one about to be queued), and at the last one delivered there, and says
which to drop and why. :mod:`activity_queue.sending.drops` applies it when
enqueuing and again just before sending.

The rules, tried in this order on every (older, newer) pair of the group:

=================  =================  =============  ===========================  ==========
rule               older              newer          when                         drops
=================  =================  =============  ===========================  ==========
identical          any                same type      same payload                 one copy
create-delete      Create             Delete         the inbox never heard of it  both
superseded-update  Update             Update         always                       the older
moot-by-delete     Create/Update/     Delete         always                       the older
                   Add/Remove
=================  =================  =============  ===========================  ==========

then, on what is left:

=================  ===================================================  ===========
already-delivered  one activity left, identical to the last delivered   it
=================  ===================================================  ===========

"Same payload" ignores the volatile ``id`` and ``published`` fields. Of two
identical copies the newer goes when nothing is queued between them, the
older otherwise (so that the last word stays last). An activity that is in
flight (leased by another worker) is never dropped: a rule that would drop
it does not apply (for adjacent identical copies, the other one goes).

``create-delete`` applies only when nothing about the object was ever
delivered to that inbox and nothing is in flight there, so that a server
which knows the object still hears of its deletion; a Delete it cancels
still makes the activities queued between the two moot.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

VOLATILE = frozenset({"id", "published"})


def fingerprint(payload: Mapping[str, Any]) -> str:
    """The payload as canonical JSON, without the fields that differ between copies."""
    return json.dumps({k: v for k, v in payload.items() if k not in VOLATILE},
                      sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True, slots=True)
class Entry:
    """One activity of a group (same inbox, same object)."""

    key: Hashable
    type: str
    fingerprint: str
    #: Position in time: smaller is older.
    order: int
    #: False when another worker holds it in flight: it cannot be dropped.
    movable: bool = True


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    older: frozenset[str] | None
    newer: frozenset[str] | None
    same_payload: bool
    never_delivered: bool
    #: "newer", "older", "both", or "copy" (one of two identical copies, see _victims)
    drops: str
    reason: str

    def matches(self, older: Entry, newer: Entry, unknown: bool) -> bool:
        """``unknown``: the inbox never heard of the object and nothing about it is in flight."""
        return ((self.older is None or older.type in self.older)
                and (self.newer is None or newer.type in self.newer)
                and (not self.same_payload or older.fingerprint == newer.fingerprint)
                and (not self.never_delivered or unknown))


RULES: tuple[Rule, ...] = (
    Rule("identical", None, None, same_payload=True, never_delivered=False, drops="copy",
         reason="an identical activity is already queued for this inbox"),
    Rule("create-delete", frozenset({"Create"}), frozenset({"Delete"}), same_payload=False,
         never_delivered=True, drops="both",
         reason="Create and Delete of the same object were both still pending"),
    Rule("superseded-update", frozenset({"Update"}), frozenset({"Update"}), same_payload=False,
         never_delivered=False, drops="older", reason="replaced by a newer Update"),
    Rule("moot-by-delete", frozenset({"Create", "Update", "Add", "Remove"}),
         frozenset({"Delete"}),
         same_payload=False, never_delivered=False, drops="older",
         reason="the object is deleted; a pending Delete follows"),
)
@dataclass(frozen=True, slots=True)
class Drop:
    """Why an entry goes: the rule, its reason, and the other entry a pair rule dropped with it."""

    rule: str
    reason: str
    partner: Hashable | None = None


ALREADY_DELIVERED = "already-delivered"
ALREADY_DELIVERED_REASON = "identical to the last activity delivered to this inbox for this object"


def _victims(rule: Rule, older: Entry, newer: Entry, adjacent: bool) -> list[Entry] | None:
    """What ``rule`` drops from the pair, or None when that includes an in-flight entry.

    Of two identical copies the later one is kept when something else is
    queued between them (the order of arrival decides the final state: Add,
    Remove, Add must end with the member in); adjacent copies are
    interchangeable, and then the newer goes, which costs nothing at enqueue.
    """
    if rule.drops == "copy":
        candidates = (newer, older) if adjacent else (older,)
        chosen = next(([e] for e in candidates if e.movable), None)
        return chosen
    chosen = {"both": [older, newer], "older": [older], "newer": [newer]}[rule.drops]
    return chosen if all(e.movable for e in chosen) else None


def decide(entries: Iterable[Entry], delivered: str | None) -> dict[Hashable, Drop]:
    """Which entries of one group to drop, and why.

    ``delivered`` is the fingerprint of the last activity successfully
    delivered to this inbox about this object, or None if there was none.
    """
    group = sorted(entries, key=lambda e: e.order)
    unknown = delivered is None and all(e.movable for e in group)
    dropped: dict[Hashable, Drop] = {}
    for i, older in enumerate(group):
        for j in range(i + 1, len(group)):
            newer = group[j]
            if older.key in dropped:
                break
            if newer.key in dropped and dropped[newer.key].rule != "create-delete":
                continue  # a Delete cancelled with its Create still makes the Updates between moot
            adjacent = all(e.key in dropped for e in group[i + 1:j])
            for rule in RULES:
                if not rule.matches(older, newer, unknown):
                    continue
                victims = _victims(rule, older, newer, adjacent)
                if victims is None or any(v.key in dropped for v in victims):
                    continue
                for victim in victims:
                    partner = newer.key if victim is older else older.key
                    dropped[victim.key] = Drop(rule.name, rule.reason,
                                               partner if len(victims) == 2 else None)
                break
    left = [e for e in group if e.key not in dropped]
    if len(left) == 1 and left[0].movable and left[0].fingerprint == delivered:
        dropped[left[0].key] = Drop(ALREADY_DELIVERED, ALREADY_DELIVERED_REASON)
    return dropped
