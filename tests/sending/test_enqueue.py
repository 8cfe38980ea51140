"""enqueue(): the outbox write, in the caller's transaction."""

import json
from types import MappingProxyType

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

import activity_queue
from activity_queue import enqueue
from activity_queue.exceptions import InvalidActivity
from activity_queue.inbox.validation import MAX_DEPTH
from activity_queue.models import Activity, Payload, ScheduledActivity
from activity_queue.sending.backends import thread as thread_backend
from activity_queue.sending.queue import ENQUEUE_FUNCTION

from ..support.helpers import recorded_statements, sqlite_plan, stored

pytestmark = pytest.mark.django_db(transaction=True)

NOTE = {"type": "Create", "object": {"@id": "https://here.example/notes/1", "@type": "Note"}}


def _inserts(queries) -> list[str]:
    """The writes to the queue: an INSERT, or on PostgreSQL a call of the stored function."""
    return [q["sql"] for q in queries
            if "INSERT INTO" in q["sql"].upper() or ENQUEUE_FUNCTION in q["sql"]]


def test_fan_out_stores_its_payload_once_in_at_most_two_inserts():
    """One statement on PostgreSQL (the stored function); on SQLite the payload, then the rows."""
    inboxes = [f"https://remote{i}.example/inbox/" for i in range(50)]
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        rows = enqueue(NOTE, to=inboxes)
    assert len(_inserts(queries)) == (1 if connection.vendor == "postgresql" else 2)
    assert len(rows) == 50
    (payload,) = Payload.objects.all()
    assert {row.payload_id for row in ScheduledActivity.objects.all()} == {payload.pk}
    assert payload.document == {**NOTE, "id": rows[0].activity_id}
    assert sorted(ScheduledActivity.objects.values_list("inbox", flat=True)) == sorted(inboxes)
    assert ScheduledActivity.objects.filter(host="https://remote7.example").count() == 1


def test_copies_share_one_stable_id():
    rows = enqueue(NOTE, to=["https://a.example/inbox/", "https://b.example/inbox/"])
    stored = list(ScheduledActivity.objects.all())
    ids = {r.activity_id for r in stored} | {r.payload.document["id"] for r in stored}
    assert len(ids) == 1
    (activity_id,) = ids
    assert activity_id.startswith("http://testserver/activities/")
    assert {r.payload.document["id"] for r in rows} == ids
    assert "id" not in NOTE, "the caller's dict is not modified"
    assert stored[0].activity_type == "Create"
    assert stored[0].object_id == "https://here.example/notes/1"


def test_existing_id_is_kept():
    enqueue({**NOTE, "id": "https://here.example/activities/42"}, to="https://a.example/inbox/")
    row = ScheduledActivity.objects.get()
    assert row.activity_id == row.payload.document["id"] == "https://here.example/activities/42"


def test_inboxes_are_deduplicated():
    rows = enqueue(NOTE, to=["https://a.example/inbox/", "https://b.example/inbox/",
                             "https://a.example/inbox/"])
    assert [r.inbox for r in rows] == ["https://a.example/inbox/", "https://b.example/inbox/"]
    assert ScheduledActivity.objects.count() == 2


def test_no_inbox_writes_nothing():
    assert enqueue(NOTE, to=[]) == []
    assert not ScheduledActivity.objects.exists()


class Unserialisable:
    pass


@pytest.mark.parametrize(("activity", "to", "message"), [
    (["Create"], "https://a.example/inbox/", "must be a dict"),
    ({"object": "https://x.example/1"}, "https://a.example/inbox/", "needs a 'type'"),
    ({"type": ""}, "https://a.example/inbox/", "needs a 'type'"),
    ({"type": 3}, "https://a.example/inbox/", "needs a 'type'"),
    ({"type": "Create", "object": Unserialisable()}, "https://a.example/inbox/",
     "not JSON-serialisable"),
    ({"type": "Create", "object": {"score": float("nan")}}, "https://a.example/inbox/",
     "not JSON-serialisable"),
    (NOTE, "ftp://a.example/inbox/", "must be http or https"),
    (NOTE, "file:///etc/passwd", "must be http or https"),
    (NOTE, "https:///inbox/", "has no host"),
    (NOTE, "https://user:secret@a.example/inbox/", "must not carry credentials"),
    (NOTE, "https://a.example:99999/inbox/", "not a valid URL"),
    (NOTE, ["https://a.example/inbox/", 42], r"must be a URL string, not int \(42\)"),
    (NOTE, ["https://a.example/inbox/", ""], "non-empty URL string"),
    (NOTE, 42, "must be an inbox URL or an iterable"),
    (NOTE, "https://a.example/" + "x" * 2000, "is longer than 2000 characters"),
    (NOTE, "https://" + "a" * 250 + ".example/inbox/", "its host is longer than 255"),
    (NOTE, [["https://a.example/inbox/"]], "must be an inbox URL or an iterable"),
])
def test_bad_input_is_refused_and_nothing_written(activity, to, message):
    """Every refusal is an InvalidActivity, so a ValueError (WrongType is a TypeError too)."""
    with pytest.raises(InvalidActivity, match=message):
        enqueue(activity, to=to)
    assert not ScheduledActivity.objects.exists()


@pytest.mark.parametrize(("bad", "message", "near_miss"), [
    ("a\x00b", r'contains a NUL character \(….*"a\\u0000\)', "a\\u0000b"),
    ("\ud800", "contains an unpaired surrogate", "\\ud800"),
    ("x\\\udfff", "contains an unpaired surrogate", "x\\\\udfff"),
    ("\ude00\ud83d", "unpaired surrogate", "\ud83d\ude00"),  # the pair, reversed
    ("😀\ud83d", "unpaired surrogate", "😀😀"),  # a pair, then half of one
], ids=["nul", "high", "low", "reversed-pair", "half-pair"])
@pytest.mark.parametrize("where", ["value", "key"])
def test_nul_and_lone_surrogates_are_refused_before_the_database(bad, message, near_miss,
                                                                 where):
    """PostgreSQL's jsonb would abort the caller's transaction: refused first, on SQLite too.

    What only looks like one in JSON text (an escaped backslash then ``u0000``, a surrogate
    pair) is an ordinary string, stored in the same transaction afterwards.
    """
    def note(text: str) -> dict:
        return {"type": "Note", "content": text} if where == "value" else \
            {"type": "Note", text: "key"}

    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries, \
                pytest.raises(InvalidActivity, match=message):
            enqueue({**note(bad), "tag": [{"name": "ok"}]}, to="https://a.example/inbox/")
        assert queries.captured_queries == []
        # The caller's transaction goes on: a query, and an enqueue, in the same block.
        assert not ScheduledActivity.objects.exists()
        (row,) = enqueue(note(near_miss), to="https://a.example/inbox/")
    stored = ScheduledActivity.objects.get()
    assert stored.pk == row.pk
    assert {**stored.payload.document, "id": None} == {**json.loads(json.dumps(note(near_miss))),
                                              "id": None}


def nested(levels: int) -> dict:
    """An activity whose containers (the activity itself included) nest ``levels`` deep."""
    value = "https://here.example/notes/1"
    for _ in range(levels - 1):
        value = [value]
    return {"type": "Create", "object": value}


@pytest.mark.parametrize(("error", "activity", "to", "message"), [
    (TypeError, NOTE, b"https://a.example/inbox/", "not bytes; decode it first"),
    (TypeError, NOTE, bytearray(b"https://a.example/inbox/"), "not bytearray; decode it first"),
    (TypeError, NOTE, [b"https://a.example/inbox/"],
     r"an inbox must be a URL string, not bytes \(b'https://a.example/inbox/'\); decode it"),
    (TypeError, NOTE, ["https://a.example/inbox/", None], "must be a URL string, not NoneType"),
    (ValueError, NOTE, "https://a.example/inbox/#main", "has a fragment"),
    (ValueError, NOTE, "https://a.example/inbox/#", "has a fragment"),
    (ValueError, NOTE, "https://a.example/in\nbox/", "contains control characters"),
    (ValueError, NOTE, "https://a.example/inbox/\r\nX: 1", "contains control characters"),
    (ValueError, NOTE, "https://a.example/in\x00box/", "contains control characters"),
    (ValueError, NOTE, "https://a.example/in\tbox/", "contains control characters"),
    (ValueError, NOTE, "https://a.example/inbox/\x7f", "contains control characters"),
    (ValueError, NOTE, "https://a.example/inbox/\ud800", "contains an unpaired surrogate"),
    (ValueError, NOTE, "https://a.example/\udfff/inbox/", "contains an unpaired surrogate"),
    (ValueError, NOTE, "\x00https://a.example/inbox/", "contains control characters"),
    (TypeError, {**NOTE, "id": 42}, "https://a.example/inbox/",
     "'id' must be a string, not int; leave it out"),
    (TypeError, {**NOTE, "id": None}, "https://a.example/inbox/", "not NoneType"),
    (TypeError, {**NOTE, "id": {"@id": "https://here.example/a/1"}},
     "https://a.example/inbox/", "'id' must be a string, not dict"),
    (ValueError, nested(MAX_DEPTH + 1), "https://a.example/inbox/",
     f"nested more than {MAX_DEPTH} levels deep"),
    (ValueError, nested(5000), "https://a.example/inbox/",
     f"nested more than {MAX_DEPTH} levels deep"),
])
def test_malformed_inboxes_ids_and_nesting_are_refused(error, activity, to, message):
    with pytest.raises(error, match=message) as raised:
        enqueue(activity, to=to)
    assert isinstance(raised.value, InvalidActivity)
    assert not ScheduledActivity.objects.exists()


@pytest.mark.parametrize("to", [
    {"https://a.example/inbox/": "Alice"},
    {},
    MappingProxyType({"https://a.example/inbox/": 1}),
])
def test_a_mapping_is_not_a_list_of_inboxes(to):
    """A dict iterates over its keys; taking those for inboxes would hide a caller's mistake."""
    with pytest.raises(TypeError, match=r"not a (dict|mappingproxy): its keys would be taken"):
        activity_queue.enqueue(NOTE, to=to)
    assert not ScheduledActivity.objects.exists()


def test_nesting_up_to_the_inbox_limit_is_accepted():
    """The inbox's limit (32), not one of enqueue's own: what we would refuse we do not send."""
    assert MAX_DEPTH == 32
    (row,) = enqueue(nested(32), to="https://a.example/inbox/")
    assert ScheduledActivity.objects.get().payload.document == row.payload.document
    with pytest.raises(InvalidActivity, match="nested more than 32 levels deep"):
        enqueue(nested(33), to="https://a.example/inbox/")
    assert ScheduledActivity.objects.count() == 1


def test_internationalised_hosts_are_one_host_in_punycode():
    rows = enqueue(NOTE, to=["https://bücher.example/inbox", "https://xn--bcher-kva.example/b",
                             "https://BÜCHER.example:443/c", "https://XN--BCHER-KVA.example/d",
                             "https://bücher.example:8443/e"])
    assert [r.host for r in rows] == ["https://xn--bcher-kva.example"] * 4 + [
        "https://xn--bcher-kva.example:8443"]
    assert sorted(ScheduledActivity.objects.values_list("host", flat=True)) == \
        sorted(r.host for r in rows)
    assert rows[0].inbox == "https://bücher.example/inbox", "the inbox URL is kept as given"


@pytest.mark.parametrize(("inbox", "message"), [
    ("https://xn--zz.example/inbox", "'xn--zz.example' is not a valid internationalised host"),
    ("https://a\u200db.example/inbox", "is not a valid internationalised host name"),
    ("https://bücher.xn--zz/inbox", "is not a valid internationalised host name"),
    ("https://-bücher.example/inbox", "is not a valid internationalised host name"),
])
def test_invalid_internationalised_hosts_are_refused(inbox, message):
    with pytest.raises(ValueError, match=message) as raised:
        enqueue(NOTE, to=["https://a.example/inbox/", inbox])
    assert isinstance(raised.value, InvalidActivity)
    assert not ScheduledActivity.objects.exists()


def test_bad_delay_is_refused():
    with pytest.raises(InvalidActivity, match="delay"):
        enqueue(NOTE, to="https://a.example/inbox/", delay=-1)
    assert not ScheduledActivity.objects.exists()


def test_delay_sets_the_due_time():
    (row,) = enqueue(NOTE, to="https://a.example/inbox/", delay=60)
    assert (row.next_attempt_at - row.created_at).total_seconds() == 60
    assert not ScheduledActivity.objects.due().exists()


def test_rolled_back_enqueue_is_never_sent(receiver, worker):
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue(NOTE, to=receiver.url("/inbox/"))
        assert ScheduledActivity.objects.count() == 1
        raise RuntimeError("the model change failed")
    assert not ScheduledActivity.objects.exists()
    report = worker().run_once(timeout=10)
    assert report.claimed == 0
    assert receiver.received == []
    assert not Activity.objects.exists()


@pytest.fixture
def wakes(monkeypatch):
    """Records each wake-up of the in-process backend (and still performs it)."""
    calls = []
    real = thread_backend.wake

    def spy(using):
        calls.append({"using": using, "in_transaction": connection.in_atomic_block,
                      "rows": ScheduledActivity.objects.count()})
        real(using)

    monkeypatch.setattr(thread_backend, "wake", spy)
    return calls


def test_worker_is_woken_only_after_commit(wakes):
    with transaction.atomic():
        enqueue(NOTE, to=["https://a.example/inbox/", "https://b.example/inbox/"])
        assert wakes == []
    assert wakes == [{"using": "default", "in_transaction": False, "rows": 2}]


def test_rollback_wakes_nobody(wakes):
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue(NOTE, to="https://a.example/inbox/")
        raise RuntimeError("roll back")
    assert wakes == []


def test_enqueue_outside_a_transaction_wakes_at_once(wakes):
    enqueue(NOTE, to="https://a.example/inbox/")
    assert len(wakes) == 1


@pytest.mark.parametrize("inboxes", [1, 3])
def test_the_predecessor_check_reads_only_deliveries_to_the_inbox_about_the_object(inboxes):
    """Written under the caller's write lock: on SQLite a plan that reads every delivered
    row made each enqueue() slower as the log grew, and every other writer waited."""
    if connection.vendor != "sqlite":
        pytest.skip("on PostgreSQL the statement is a stored function")
    payload = stored({"type": "Create"})
    Activity.objects.bulk_create(
        Activity(activity_id=f"urn:a{i}", activity_type="Create", object_id=f"urn:o{i}",
                 inbox=f"https://r{i % 7}.example/inbox/", host=f"https://r{i % 7}.example",
                 payload=payload, direction=Activity.Direction.OUTBOUND, status="sent")
        for i in range(300))
    with recorded_statements() as statements, transaction.atomic():
        enqueue(NOTE, to=[f"https://r{i}.example/inbox/" for i in range(inboxes)])
    queue = f"INSERT INTO {ScheduledActivity._meta.db_table}"
    sql, params = next((s, p) for s, p in statements if queue in s)
    plan = sqlite_plan(sql, params)
    log = [line for line in plan if " d " in f" {line} "]
    assert log and all("USING INDEX aq_act_delivered (inbox=? AND object_id=?)" in line
                       for line in log), plan
