"""The shape an inbound activity must have before the inbox records it (pure).

Everything here works on plain values and says *why* something is refused,
in a sentence the sender can act on; the inbox turns that into a 400. The
checks are deliberately about shape only: whether an activity can be applied
to the local models is :mod:`activity_queue.inbox.receive`'s decision.

Beyond the ActivityStreams shape, values are refused that would break the
database rather than the application (NUL characters and lone surrogates,
which PostgreSQL's ``jsonb`` rejects; non-finite numbers; ids longer than the
log's columns), so no input can turn into a server error.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..exceptions import InvalidActivity
from ..net.addresses import origin
from ..payloads import MAX_DEPTH, string_problem

#: Activity types the inbox accepts: the backlink vocabulary of DjangoLDP servers.
#: Anything else (Follow, Like, Announce, Undo…) has no meaning for backlinks and
#: is refused with a 400 rather than logged as received and silently ignored.
ACCEPTED_TYPES = ("Create", "Update", "Delete", "Add", "Remove")

#: Lengths of the ``Activity`` columns the values end up in.
MAX_ACTIVITY_ID = 500
MAX_OBJECT_ID = 2000
#: Prefix of the id given to an activity that arrives without one.
CONTENT_ID_PREFIX = "urn:sha256:"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def decode(body: bytes) -> Any:
    """Parse a request body as strict JSON (UTF-8, finite numbers); raise InvalidActivity."""
    if not body.strip():
        raise InvalidActivity("the request body is empty; expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidActivity("the request body is not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidActivity(f"the JSON is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:
        raise InvalidActivity(f"malformed JSON: {exc}") from None


def _walk(value: Any, depth: int = 1) -> str | None:
    """Depth and string sanity of a whole JSON value, iteratively (no recursion limit)."""
    stack = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            problem = string_problem(item)
            if problem:
                return f"a string value {problem}"
        elif isinstance(item, dict | list):
            if level > MAX_DEPTH:
                return f"the activity is nested more than {MAX_DEPTH} levels deep"
            if isinstance(item, dict):
                for key, child in item.items():
                    problem = string_problem(key)
                    if problem:
                        return f"a key {problem}"
                    stack.append((child, level + 1))
            else:
                stack.extend((child, level + 1) for child in item)
    return None


def url_problem(value: Any, *, max_length: int = MAX_OBJECT_ID) -> str | None:
    """Why ``value`` is not an absolute http(s) URL we can store, or None."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty URL string"
    if len(value) > max_length:
        return f"is longer than {max_length} characters"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must be an absolute http(s) URL"
    return None


def _id_problem(value: Any, *, max_length: int) -> str | None:
    """Activity ids may also be URNs (``urn:uuid:…``), as ``enqueue`` makes without SITE_URL."""
    if isinstance(value, str) and value.lower().startswith("urn:"):
        if len(value) > max_length:
            return f"is longer than {max_length} characters"
        if any(c.isspace() or ord(c) < 0x20 for c in value) or len(value) < 6:
            return "is not a valid URN"
        return None
    return url_problem(value, max_length=max_length)


def node_id(node: Any) -> Any:
    """The ``@id`` (or ``id``) of a JSON-LD node; None when it has neither."""
    if not isinstance(node, dict):
        return None
    return node["@id"] if "@id" in node else node.get("id")


def _link_problem(name: str, node: Any) -> str | None:
    """A link (``object``, ``target``, ``origin``) is a JSON object with an ``@id``."""
    if node is None:
        return f"'{name}' is missing"
    if not isinstance(node, dict):
        return f"'{name}' must be a JSON object with an '@id', not {_kind(node)}"
    if "@id" not in node and "id" not in node:
        return f"'{name}' has no '@id'"
    problem = url_problem(node_id(node))
    if problem:
        return f"'{name}' '@id' {problem}"
    kind = node.get("@type", node.get("type"))
    if kind is not None and not _is_type_value(kind):
        return f"'{name}' '@type' must be a string or a list of strings"
    return None


def _is_type_value(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, str) and v for v in value)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "a value")


def _context_problem(context: Any) -> str | None:
    items = context if isinstance(context, list) else [context]
    if isinstance(context, list) and not context:
        return None
    if not all(isinstance(item, str | dict) for item in items):
        return "'@context' must be a string, an object or a list of them"
    return None


def _actor_problem(actor: Any) -> str | None:
    """A URL, or an object whose ``id`` is optional (DjangoLDP sends type and name only)."""
    if isinstance(actor, str):
        problem = url_problem(actor)
        return f"'actor' {problem}" if problem else None
    if not isinstance(actor, dict):
        return f"'actor' must be a URL or a JSON object, not {_kind(actor)}"
    if "@id" in actor or "id" in actor:
        problem = url_problem(node_id(actor))
        if problem:
            return f"'actor' id {problem}"
    for key in ("type", "@type"):
        if key in actor and not _is_type_value(actor[key]):
            return f"'actor' '{key}' must be a string or a list of strings"
    if "name" in actor and not isinstance(actor["name"], str):
        return "'actor' 'name' must be a string"
    return None


def activity_type(activity: dict[str, Any]) -> Any:
    return activity["type"] if "type" in activity else activity.get("@type")


def problem(activity: Any) -> str | None:
    """Why ``activity`` (a decoded JSON value) is not an activity the inbox takes, or None."""
    if not isinstance(activity, dict):
        return f"the activity must be a JSON object, not {_kind(activity)}"
    found = _walk(activity)
    if found:
        return found
    if "@context" in activity:
        found = _context_problem(activity["@context"])
        if found:
            return found
    if "type" not in activity and "@type" not in activity:
        return "'type' is missing"
    kind = activity_type(activity)
    if not isinstance(kind, str):
        return f"'type' must be a string, not {_kind(kind)}"
    if kind not in ACCEPTED_TYPES:
        return (f"unknown activity type {kind[:40]!r}; "
                f"this inbox accepts {', '.join(ACCEPTED_TYPES)}")
    if "@id" in activity or "id" in activity:
        found = _id_problem(node_id(activity), max_length=MAX_ACTIVITY_ID)
        if found:
            return f"'id' {found}"
    if "actor" in activity:
        found = _actor_problem(activity["actor"])
        if found:
            return found
    found = _link_problem("object", activity.get("object"))
    if found:
        return found
    if kind == "Add":
        if "target" not in activity and "origin" in activity:
            return "Add takes the collection member in 'target', not 'origin'"
        return _link_problem("target", activity.get("target"))
    if kind == "Remove":
        if "origin" not in activity and "target" in activity:
            return "Remove takes the collection member in 'origin', not 'target'"
        return _link_problem("origin", activity.get("origin"))
    return None


def check(body: bytes) -> dict[str, Any]:
    """Decode and validate a body in one step; raise InvalidActivity with the reason."""
    activity = decode(body)
    found = problem(activity)
    if found:
        raise InvalidActivity(found)
    return activity


def content_id(activity: dict[str, Any]) -> str:
    """A stable id for an activity that came without one: the hash of its canonical JSON."""
    canonical = json.dumps(activity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return CONTENT_ID_PREFIX + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Summary:
    """What the log records of a valid activity."""

    activity_id: str
    has_id: bool
    activity_type: str
    object_id: str
    actor_id: str | None
    claimed_host: str


def summarize(activity: dict[str, Any]) -> Summary:
    """Describe a valid activity (``problem(activity)`` is None)."""
    given = node_id(activity)
    actor = activity.get("actor")
    actor_id = actor if isinstance(actor, str) else node_id(actor)
    object_id = node_id(activity["object"])
    claimed = next((u for u in (actor_id, given, object_id)
                    if isinstance(u, str) and url_problem(u) is None), None)
    return Summary(
        activity_id=given if given is not None else content_id(activity),
        has_id=given is not None,
        activity_type=activity_type(activity),
        object_id=object_id,
        actor_id=actor_id,
        claimed_host=origin(claimed)[:255] if claimed else "",
    )


def origin_mismatch(activity: dict[str, Any], key_id: str) -> str | None:
    """Why a signed activity speaks for another origin than its key, or None.

    A valid signature proves who sent the request; the activity's own ``id``
    and ``actor`` must then belong to that sender, or one server could make
    claims (or squat ids) in another's name.
    """
    expected = origin(key_id)
    summary = summarize(activity)
    for label, value in (("id", summary.activity_id if summary.has_id else None),
                         ("actor", summary.actor_id)):
        if isinstance(value, str) and not value.lower().startswith("urn:"):
            if origin(value) != expected:
                return f"the activity's {label} {value!r} is not on the signer's origin {expected}"
    return None
