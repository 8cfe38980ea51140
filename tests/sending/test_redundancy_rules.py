"""The redundancy table (activity_queue.sending.redundancy), rule by rule, as pure functions."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activity_queue.sending.redundancy import RULES, Entry, decide, fingerprint

OBJ = "https://a.example/circles/1/"


def payload(kind, owner="u1", **extra):
    return {"type": kind, "object": {"@id": OBJ, "owner": {"@id": owner}}, **extra}


def entry(key, kind, owner="u1", movable=True):
    return Entry(key, kind, fingerprint(payload(kind, owner)), key, movable)


def fp(kind, owner="u1"):
    return fingerprint(payload(kind, owner))


def rules(drops):
    return {key: drop.rule for key, drop in drops.items()}


def test_the_table_is_ordered_as_documented():
    assert [r.name for r in RULES] == [
        "identical", "create-delete", "superseded-update", "moot-by-delete"]


def test_fingerprint_ignores_volatile_fields_only():
    a = payload("Update", id="https://a.example/activities/1", published="2020-01-01")
    b = payload("Update", id="https://a.example/activities/2")
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(payload("Update", owner="u2"))
    assert fingerprint(a) != fingerprint(payload("Create"))


CASES = [
    # (name, entries, last delivered fingerprint, expected {key: rule})
    ("alone, nothing delivered", [entry(1, "Create")], None, {}),
    ("identical pending: the newer goes",
     [entry(1, "Update"), entry(2, "Update")], None, {2: "identical"}),
    ("identical, newer in flight: the older goes",
     [entry(1, "Add"), entry(2, "Add", movable=False)], None, {1: "identical"}),
    ("identical, both in flight: nothing",
     [entry(1, "Add", movable=False), entry(2, "Add", movable=False)], None, {}),
    ("identical copies with another between: the older goes (Add, Remove, Add ends in)",
     [entry(1, "Add"), entry(2, "Remove"), entry(3, "Add")], None, {1: "identical"}),
    ("identical, older in flight, another between: the one between is superseded",
     [entry(1, "Update", movable=False), entry(2, "Update", "u2"), entry(3, "Update")], None,
     {2: "superseded-update"}),
    ("identical, older in flight, an Add between: nothing",
     [entry(1, "Remove", movable=False), entry(2, "Add"), entry(3, "Remove")], None, {}),
    ("same type, other payload: not identical",
     [entry(1, "Add", "u1"), entry(2, "Add", "u2")], None, {}),
    ("newer Update replaces older Update",
     [entry(1, "Update", "u1"), entry(2, "Update", "u2")], None, {1: "superseded-update"}),
    ("older Update in flight: both stay",
     [entry(1, "Update", "u1", movable=False), entry(2, "Update", "u2")], None, {}),
    ("three Updates: only the newest stays",
     [entry(1, "Update", "u1"), entry(2, "Update", "u2"), entry(3, "Update", "u3")], None,
     {1: "superseded-update", 2: "superseded-update"}),
    ("Delete makes an older Update moot",
     [entry(1, "Update"), entry(2, "Delete")], None, {1: "moot-by-delete"}),
    ("Delete makes an older Create moot once something was delivered",
     [entry(1, "Create"), entry(2, "Delete")], fp("Add"), {1: "moot-by-delete"}),
    ("Create and Delete both pending, nothing delivered: both go",
     [entry(1, "Create"), entry(2, "Delete")], None,
     {1: "create-delete", 2: "create-delete"}),
    ("Create in flight: the Delete stays",
     [entry(1, "Create", movable=False), entry(2, "Delete")], None, {}),
    ("an Update in flight between: the Create is moot, the Delete stays",
     [entry(1, "Create"), entry(2, "Update", "u2", movable=False), entry(3, "Delete")], None,
     {1: "moot-by-delete"}),
    ("Create, Update, Delete, nothing delivered: all go",
     [entry(1, "Create"), entry(2, "Update", "u2"), entry(3, "Delete")], None,
     {1: "create-delete", 2: "moot-by-delete", 3: "create-delete"}),
    ("a Delete older than the Create: no rule",
     [entry(1, "Delete"), entry(2, "Create")], None, {}),
    ("Create then Update: both needed",
     [entry(1, "Create"), entry(2, "Update", "u2")], None, {}),
    ("Add then Remove: not in the table",
     [entry(1, "Add"), entry(2, "Remove")], None, {}),
    ("Delete makes older Add and Remove moot",
     [entry(1, "Add"), entry(2, "Remove", "u2"), entry(3, "Delete")], fp("Create"),
     {1: "moot-by-delete", 2: "moot-by-delete"}),
    ("Create, Add, Delete, nothing delivered: all go",
     [entry(1, "Create"), entry(2, "Add"), entry(3, "Delete")], None,
     {1: "create-delete", 2: "moot-by-delete", 3: "create-delete"}),
    ("identical to the last delivered: not sent again",
     [entry(1, "Add")], fp("Add"), {1: "already-delivered"}),
    ("differs from the last delivered: sent",
     [entry(1, "Update", "u2")], fp("Update", "u1"), {}),
    ("identical to last delivered but another is queued: sent (order matters)",
     [entry(1, "Update", "u2"), entry(2, "Add")], fp("Add"), {}),
    ("an Update back to the delivered state replaces the pending one, then goes too",
     [entry(1, "Update", "u2"), entry(2, "Update", "u1")], fp("Update", "u1"),
     {1: "superseded-update", 2: "already-delivered"}),
    ("identical to last delivered but in flight: untouched",
     [entry(1, "Add", movable=False)], fp("Add"), {}),
]


@pytest.mark.parametrize("name,entries,delivered,expected", CASES, ids=[c[0] for c in CASES])
def test_rule(name, entries, delivered, expected):
    assert rules(decide(entries, delivered)) == expected


def test_create_delete_names_its_partner():
    drops = decide([entry(1, "Create"), entry(2, "Delete")], None)
    assert drops[1].partner == 2 and drops[2].partner == 1
    assert decide([entry(1, "Update"), entry(2, "Update", "u2")], None)[1].partner is None


kinds = st.sampled_from(["Create", "Update", "Delete", "Add", "Remove"])
owners = st.sampled_from(["u1", "u2"])


@given(st.lists(st.tuples(kinds, owners, st.booleans()), max_size=8),
       st.one_of(st.none(), st.tuples(kinds, owners)))
def test_invariants(specs, last):
    entries = [entry(i, k, o, m) for i, (k, o, m) in enumerate(specs)]
    delivered = fp(*last) if last else None
    drops = decide(entries, delivered)
    by_key = {e.key: e for e in entries}
    # in-flight entries are never dropped
    assert all(by_key[k].movable for k in drops)
    # the newest Delete always survives unless cancelled with a Create
    deletes = [e for e in entries if e.type == "Delete" and e.movable]
    if deletes and deletes[-1].key in drops:
        assert drops[deletes[-1].key].rule in ("create-delete", "identical", "already-delivered")
    # a Delete cancelled with its Create leaves nothing older about the object behind
    for e in deletes:
        if drops.get(e.key) and drops[e.key].rule == "create-delete":
            assert all(o.key in drops for o in entries if o.order < e.order and o.type != "Delete")
            assert all(o.movable for o in entries)
    # the last word stays last: what is sent ends in the newest entry's state
    survivors = [e for e in entries if e.key not in drops]
    if entries and entries[-1].key in drops:
        newest = entries[-1]
        rule = drops[newest.key].rule
        if rule == "create-delete":
            assert not any(e.type != "Delete" for e in survivors if e.movable)
        elif survivors:  # identical: the copy that stays is the last one sent
            assert rule == "identical" and survivors[-1].fingerprint == newest.fingerprint
        else:  # nothing is sent: the receiver already has that state
            assert newest.fingerprint == delivered
    elif entries:
        assert survivors[-1] is entries[-1]
