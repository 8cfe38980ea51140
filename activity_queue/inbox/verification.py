"""Activities nobody vouches for, checked at the origin of the object they change.

An unsigned activity (DjangoLDP servers sign nothing), or one signed by
another origin than its object's, proves nothing about that object: any
server could have written it. With ``INBOX_UNSIGNED = "verify"`` the inbox
fetches the object from its ``@id`` and applies what the object's origin
says rather than what the activity says:

- Create, Update: the object's links as its document has them;
- Add, Remove: only when the document lists (Add), or no longer lists
  (Remove), the member in that collection; with the document's links;
- Delete: only when the origin answers 404 or 410.

Anything else (another document, another type, another origin after a
redirect, an error, no answer) changes nothing, and the reason goes on the
received log row. The fetch happens while the sender waits, with a short
timeout: deferring it would need a queue of unverified activities of its own,
and the sender, answered 202, waits for nothing. The fetch goes through the
discovery fetcher, so private addresses, redirects, size and time are limited
as for every outbound request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..conf import get_config
from ..federation import discovery
from ..federation import registry as linked
from ..net.addresses import origin
from ..net.signing import FETCH_ACCEPT
from . import receive
from .validation import node_id

#: Seconds the whole fetch may take (redirects included) while the sender waits.
FETCH_TIMEOUT = 5.0
#: ActivityPub's media types, then plain JSON, which some linked-data servers answer with.
ACCEPT = f"{FETCH_ACCEPT}, application/json;q=0.8"
#: Where a document's collection (an LDP container, an ActivityStreams collection) lists
#: its members, when the value is a container rather than a list.
MEMBER_KEYS = ("ldp:contains", "http://www.w3.org/ns/ldp#contains", "contains",
               "items", "orderedItems")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to apply (None: nothing), why nothing is, and whether the origin was asked."""

    activity: dict[str, Any] | None
    reason: str = ""
    at_origin: bool = False


def _type_of(node: dict[str, Any]) -> Any:
    return node.get("@type") or node.get("type")


def object_to_check(activity: dict[str, Any]) -> str | None:
    """The urlid of the remote record applying ``activity`` would write, or None when it
    would write none (no local model has its type, a Delete of something unknown here,
    or a local object, which :func:`receive.apply_activity` refuses anyway)."""
    obj = activity.get("object")
    urlid = node_id(obj)
    if not isinstance(urlid, str) or not linked.is_external(urlid):
        return None
    spec = linked.spec_for_type(_type_of(obj))
    if activity.get("type") != "Delete":
        return urlid if spec is not None else None
    specs = [spec] if spec is not None else linked.registered()
    known = any(s.model._default_manager.filter(urlid=urlid).exists() for s in specs)
    return urlid if known else None


def listed_members(document: dict[str, Any], name: str) -> set[str] | None:
    """The ids a document lists under ``name`` (a list, or a container of one), or None
    when it does not say."""
    if name not in document:
        return None
    value = document[name]
    if isinstance(value, dict) and not any(key in value for key in MEMBER_KEYS):
        value = [value]
    elif isinstance(value, dict):
        value = next(value[key] for key in MEMBER_KEYS if key in value)
    if value is None:
        return set()
    items = value if isinstance(value, list) else [value]
    ids = (item if isinstance(item, str) else node_id(item) for item in items)
    return {i for i in ids if isinstance(i, str)}


def confirm(activity: dict[str, Any], fetched: discovery.Fetched) -> Verdict:
    """What the origin's answer to the GET of the object allows of ``activity``."""
    kind = activity["type"]
    urlid = node_id(activity["object"])
    if origin(fetched.url) != origin(urlid):
        # Only the origin speaks for its objects: else an open redirect there would let
        # any server confirm changes to them.
        return Verdict(None, f"not applied: {urlid} was served by {origin(fetched.url)}, "
                             "not by its own origin")
    if kind == "Delete":
        if fetched.status in (404, 410):
            return Verdict(activity)
        return Verdict(None, f"not applied: the origin of {urlid} answers HTTP "
                             f"{fetched.status} for it, not 404 or 410")
    document = fetched.document
    if not isinstance(document, dict):
        found = "no readable JSON document" if 200 <= fetched.status < 300 else (
            f"HTTP {fetched.status}")
        return Verdict(None, f"not applied: the origin of {urlid} answers {found} for it")
    if node_id(document) != urlid:
        return Verdict(None, f"not applied: {urlid} serves another document "
                             f"({str(node_id(document))[:200]!r})")
    spec = linked.spec_for_type(_type_of(activity["object"]))
    if linked.spec_for_type(_type_of(document)) is not spec:
        return Verdict(None, f"not applied: the document at {urlid} has @type "
                             f"{str(_type_of(document))[:100]!r}, not {spec.rdf_type!r}")
    obj = {"@type": spec.rdf_type, "@id": urlid,
           **{f.name: document[f.name] for f in spec.links if f.name in document}}
    if kind in ("Add", "Remove"):
        reason = _membership_problem(activity, spec, document)
        if reason:
            return Verdict(None, f"not applied: {reason}")
    return Verdict({**activity, "object": obj})


def _membership_problem(activity: dict[str, Any], spec: linked.LinkedSpec,
                        document: dict[str, Any]) -> str | None:
    adding = activity["type"] == "Add"
    member = activity.get("target") if adding else activity.get("origin",
                                                                 activity.get("target"))
    member_spec = linked.spec_for_type(_type_of(member)) if isinstance(member, dict) else None
    relation = receive.collection(spec.model, member_spec.model) if member_spec else None
    if relation is None:
        return None  # nothing here to add to or remove from
    field, forward = relation
    name = field.name if forward else field.remote_field.get_accessor_name()
    urlid, member_id = node_id(document), node_id(member)
    listed = listed_members(document, name)
    if listed is None:
        return f"the document at {urlid} does not list its {name}"
    if adding and member_id not in listed:
        return f"the document at {urlid} does not list {member_id} in its {name}"
    if not adding and member_id in listed:
        return f"the document at {urlid} still lists {member_id} in its {name}"
    return None


def verify(activity: dict[str, Any]) -> Verdict:
    """Fetch the object ``activity`` changes from its origin and :func:`confirm` it."""
    urlid = object_to_check(activity)
    if urlid is None:
        return Verdict(activity)
    config = get_config()
    try:
        fetched = discovery.fetch(urlid, config=config, accept=ACCEPT,
                                  timeout=min(config.TIMEOUT, FETCH_TIMEOUT))
    except discovery.DiscoveryFailed as exc:
        return Verdict(None, f"not applied: {urlid} could not be fetched from its origin: "
                             f"{exc}", at_origin=True)
    verdict = confirm(activity, fetched)
    return Verdict(verdict.activity, verdict.reason, at_origin=True)
