"""The inbox's shape rules, as a table over plain values (no HTTP, no database)."""

import json

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from activity_queue.exceptions import InvalidActivity
from activity_queue.inbox.validation import (
    CONTENT_ID_PREFIX,
    check,
    content_id,
    decode,
    origin_mismatch,
    problem,
    summarize,
)
from activity_queue.payloads import MAX_DEPTH, NUL, SURROGATE, dumped_problem

OBJ = {"@id": "https://a.example/circles/9/", "@type": "hd:circle"}
MEMBER = {"@id": "https://b.example/users/7/", "@type": "foaf:user"}
SERVICE = {"type": "Service", "name": "Backlinks Service"}


def act(**fields):
    base = {"@context": "https://www.w3.org/ns/activitystreams", "type": "Create",
            "actor": SERVICE, "object": OBJ}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def nested(depth):
    value = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# (activity, expected reason fragment or None)
PROBLEMS = [
    (act(), None),
    (act(type="Update"), None),
    (act(type="Delete", object={"@id": OBJ["@id"], "@type": "hd:circle"}), None),
    (act(type="Add", target=MEMBER), None),
    (act(type="Remove", origin=MEMBER), None),
    (act(id="https://a.example/activities/1"), None),
    (act(id="urn:uuid:2b3c1a3e-4f5e-4a6b-8c7d-9e0f1a2b3c4d"), None),
    (act(actor="https://a.example/actor"), None),
    (act(actor={"id": "https://a.example/actor", "type": ["Service", "Application"]}), None),
    (act(actor=...), None),
    (act(**{"@context": ["https://www.w3.org/ns/activitystreams", {"hd": "https://x/"}]}), None),
    (act(**{"@context": ...}), None),
    (act(object={"id": "https://a.example/o/1"}), None),
    (act(type=..., **{"@type": "Create"}), None),
    ([], "must be a JSON object, not a list"),
    ("Create", "must be a JSON object, not a string"),
    (None, "must be a JSON object, not null"),
    (3, "must be a JSON object, not a number"),
    (act(type=...), "'type' is missing"),
    (act(type=["Create"]), "'type' must be a string, not a list"),
    (act(type="Follow"), "unknown activity type 'Follow'"),
    (act(type="create"), "unknown activity type 'create'"),
    (act(object=...), "'object' is missing"),
    (act(object="https://a.example/circles/9/"), "'object' must be a JSON object"),
    (act(object={"@type": "hd:circle"}), "'object' has no '@id'"),
    (act(object={"@id": 9}), "'object' '@id' must be a non-empty URL string"),
    (act(object={"@id": ""}), "'object' '@id' must be a non-empty URL string"),
    (act(object={"@id": "/circles/9/"}), "'object' '@id' must be an absolute http(s) URL"),
    (act(object={"@id": "ftp://a.example/x"}), "must be an absolute http(s) URL"),
    (act(object={"@id": "https://a.example/a b"}), "whitespace or control characters"),
    (act(object={"@id": "https://a.example:99999/"}), "is not a valid URL"),
    (act(object={"@id": "https://a.example/" + "x" * 2000}), "longer than 2000"),
    (act(object={"@id": OBJ["@id"], "@type": 3}), "'object' '@type' must be a string"),
    (act(id=5), "'id' must be a non-empty URL string"),
    (act(id="not a url"), "'id'"),
    (act(id="https://a.example/" + "x" * 500), "'id' is longer than 500"),
    (act(actor=["https://a.example/actor"]), "'actor' must be a URL or a JSON object"),
    (act(actor=7), "'actor' must be a URL or a JSON object, not a number"),
    (act(actor="me"), "'actor' must be an absolute http(s) URL"),
    (act(actor={"id": "nope"}), "'actor' id must be an absolute http(s) URL"),
    (act(actor={"type": 1}), "'actor' 'type' must be a string"),
    (act(actor={"name": ["x"]}), "'actor' 'name' must be a string"),
    (act(**{"@context": 5}), "'@context' must be a string, an object or a list"),
    (act(**{"@context": [5]}), "'@context' must be a string, an object or a list"),
    (act(type="Add"), "'target' is missing"),
    (act(type="Add", origin=MEMBER), "Add takes the collection member in 'target'"),
    (act(type="Add", target="https://b.example/users/7/"), "'target' must be a JSON object"),
    (act(type="Add", target={"@type": "foaf:user"}), "'target' has no '@id'"),
    (act(type="Remove"), "'origin' is missing"),
    (act(type="Remove", target=MEMBER), "Remove takes the collection member in 'origin'"),
    (act(type="Remove", origin={"@id": "x"}), "'origin' '@id' must be an absolute"),
    (act(summary="a\x00b"), "a string value contains a NUL character"),
    (act(summary="\ud800"), "unpaired surrogate"),
    (act(**{"k\x00": 1}), "a key contains a NUL character"),
    (act(extra=nested(MAX_DEPTH)), f"nested more than {MAX_DEPTH} levels deep"),
    (act(extra=nested(MAX_DEPTH - 1)), None),  # the activity, then MAX_DEPTH - 1 levels
]


@pytest.mark.parametrize(("activity", "expected"), PROBLEMS)
def test_problem_table(activity, expected):
    found = problem(activity)
    if expected is None:
        assert found is None
    else:
        assert found is not None and expected in found, found


# (body, expected reason fragment)
DECODE_ERRORS = [
    (b"", "the request body is empty"),
    (b"  \n", "the request body is empty"),
    (b"{", "malformed JSON"),
    (b"{'type': 'Create'}", "malformed JSON"),
    (b'{"type": "Create",}', "malformed JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    ('{"a": "é"}'.encode("utf-16"), "not UTF-8"),
    (b'{"n": NaN}', "NaN is not a JSON number"),
    (b'{"n": -Infinity}', "-Infinity is not a JSON number"),
    (b'{"n": 1e400}', "out of range"),
    (b'{"n": "a\x01"}', "malformed JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested more than"),
    (b'{"n": ' + b"1" * 5000 + b"}", "malformed JSON"),
]


@pytest.mark.parametrize(("body", "expected"), DECODE_ERRORS)
def test_decode_errors(body, expected):
    with pytest.raises(InvalidActivity) as caught:
        decode(body)
    assert expected in str(caught.value)


def test_check_decodes_and_validates():
    body = b'{"type": "Create", "object": {"@id": "https://a.example/1"}}'
    assert check(body)["type"] == "Create"
    with pytest.raises(InvalidActivity, match="'object' is missing"):
        check(b'{"type": "Create"}')


def test_content_id_ignores_key_order_and_spacing():
    one = decode(b'{"type": "Create", "object": {"@id": "https://a.example/1", "@type": "t"}}')
    two = decode(b'{"object":{"@type":"t","@id":"https://a.example/1"},"type":"Create"}')
    assert content_id(one) == content_id(two)
    assert content_id(one).startswith(CONTENT_ID_PREFIX) and len(content_id(one)) == 75
    assert content_id(one) != content_id({**one, "type": "Update"})


def test_summary_of_a_djangoldp_activity():
    summary = summarize(act())
    assert not summary.has_id and summary.activity_id == content_id(act())
    assert summary.activity_type == "Create"
    assert summary.object_id == OBJ["@id"]
    assert summary.actor_id is None
    assert summary.claimed_host == "https://a.example"


def test_summary_prefers_the_actor_for_the_host():
    summary = summarize(act(id="urn:uuid:1234567", actor={"id": "http://c.example:8000/actor"}))
    assert summary.has_id and summary.activity_id == "urn:uuid:1234567"
    assert summary.claimed_host == "http://c.example:8000"


@pytest.mark.parametrize(("fields", "mismatch"), [
    ({}, None),
    ({"id": "https://a.example/activities/1"}, None),
    ({"id": "urn:uuid:1234567"}, None),
    ({"id": "https://evil.example/activities/1"}, "the activity's id"),
    ({"actor": "https://evil.example/actor"}, "the activity's actor"),
    ({"actor": {"id": "https://a.example/actor"}}, None),
])
def test_origin_mismatch(fields, mismatch):
    found = origin_mismatch(act(**fields), "https://a.example/actor#main-key")
    assert (found is None) if mismatch is None else (mismatch in found)


@pytest.mark.parametrize(("value", "expected"), [
    ("a\x00b", NUL),
    ("\ud800", SURROGATE),
    ("\udc00", SURROGATE),
    ("\ude00\ud83d", SURROGATE),
    ("😀\ud83d", SURROGATE),
    ("\\\x00", NUL),
    ("\\\\\udbff", SURROGATE),
    ("😀", None),
    ("\ud83d\ude00", None),  # two code points, one character once in JSON
    ("\\u0000", None),
    ("\\ud800", None),
    ("\\\\u0000", None),
    ("\\\\ud800\\udc00", None),
    ("é\x01\U0010ffff", None),
])
def test_dumped_problem_table(value, expected):
    found = dumped_problem(json.dumps({"k": value}))
    assert (found is None) if expected is None else found.startswith(expected + " (…")
    found = dumped_problem(json.dumps({value: [1]}))
    assert (found is None) if expected is None else found.startswith(expected + " (…")


#: Characters that make and unmake escapes, and any other (surrogates included).
tricky = st.sampled_from(["\x00", "\\", "u", "0", "d", "8", "c", "\ud800", "\udc00",
                          "\ud83d", "\ude00", "😀", "é"])
strings = st.text(tricky | st.characters(exclude_categories=()), max_size=12)


def kinds(text: str) -> set[str]:
    """What the inbox's rule finds in ``text`` as a receiver decodes it (JSON joins a high
    and a low surrogate into one character), each kind looked for on its own."""
    received = json.loads(json.dumps(text))
    found = {NUL} if "\x00" in received else set()
    if SURROGATE in (problem(act(summary=received.replace("\x00", ""))) or ""):
        found.add(SURROGATE)
    return found


@hypothesis_settings(max_examples=500)
@given(values=st.lists(strings, max_size=3), key=strings)
def test_dumped_text_gets_the_verdict_of_its_strings(values, key):
    """enqueue()'s check on the JSON text agrees with the inbox's check on the values."""
    expected = set().union(*map(kinds, [key, *values]))
    found = dumped_problem(json.dumps({key: values}))
    if not expected:
        assert found is None
    else:
        assert found is not None and found.split(" (…")[0] in expected, (found, expected)
