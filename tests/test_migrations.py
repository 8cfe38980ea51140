"""Upgrading a site with a queue and a log: rows move to shared payloads, rows are
keyed by (object, inbox), and both go back."""

import json
from importlib import import_module

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from activity_queue.models import pair_key

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("activity_queue", "0010_host_unavailable")]
AFTER = [("activity_queue", "0011_payload")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_apps():
    apps = migrate(BEFORE)
    yield apps
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes("activity_queue"))


def activity(n: int, kind: str = "Create") -> dict:
    return {"id": f"https://here.example/activities/{n}", "type": kind,
            "object": {"@id": f"https://here.example/notes/{n}"}, "content": "é ✓"}


def test_queued_and_logged_rows_move_to_shared_payloads_and_back(old_apps):
    Scheduled = old_apps.get_model("activity_queue", "ScheduledActivity")
    Logged = old_apps.get_model("activity_queue", "Activity")
    fan_out = activity(1)
    for inbox in ("https://a.example/inbox/", "https://b.example/inbox/"):
        Scheduled.objects.create(
            activity_id=fan_out["id"], activity_type="Create", object_id=fan_out["object"]["@id"],
            inbox=inbox, host=inbox[:17], payload=fan_out, attempts=2, last_error="HTTP 503")
    Logged.objects.create(
        activity_id=fan_out["id"], activity_type="Create", object_id=fan_out["object"]["@id"],
        inbox="https://c.example/inbox/", host="https://c.example", payload=fan_out,
        direction="out", status="sent", attempts=1)
    lone = activity(2, "Update")
    Logged.objects.create(activity_id=lone["id"], activity_type="Update",
                          object_id=lone["object"]["@id"], inbox="", host="https://d.example",
                          payload=lone, direction="in", status="received")

    apps = migrate(AFTER)
    Payload = apps.get_model("activity_queue", "Payload")
    Scheduled = apps.get_model("activity_queue", "ScheduledActivity")
    Logged = apps.get_model("activity_queue", "Activity")
    assert Payload.objects.count() == 2, "the copies of one activity share one payload"
    shared = Payload.objects.get(activity_id=fan_out["id"])
    assert json.loads(shared.body) == fan_out
    assert (shared.activity_type, shared.object_id) == ("Create", fan_out["object"]["@id"])
    queued = list(Scheduled.objects.order_by("inbox"))
    assert [(r.inbox, r.payload_id, r.attempts, r.last_error) for r in queued] == [
        ("https://a.example/inbox/", shared.pk, 2, "HTTP 503"),
        ("https://b.example/inbox/", shared.pk, 2, "HTTP 503")]
    object_key = import_module("activity_queue.migrations.0011_payload")._key
    assert {r.object_key for r in queued} == {object_key(fan_out["object"]["@id"])}
    assert Logged.objects.get(status="sent").payload_id == shared.pk
    received = Logged.objects.get(status="received")
    assert json.loads(Payload.objects.get(pk=received.payload_id).body) == lone

    apps = migrate(BEFORE)
    Scheduled = apps.get_model("activity_queue", "ScheduledActivity")
    Logged = apps.get_model("activity_queue", "Activity")
    assert sorted((r.activity_id, r.inbox, r.payload) for r in Scheduled.objects.all()) == [
        (fan_out["id"], "https://a.example/inbox/", fan_out),
        (fan_out["id"], "https://b.example/inbox/", fan_out)]
    assert sorted(r.activity_id for r in Logged.objects.all()) == [fan_out["id"], lone["id"]]
    assert {r.activity_id: r.payload for r in Logged.objects.all()}[lone["id"]] == lone


def test_queued_rows_are_keyed_by_object_and_inbox_and_back():
    apps = migrate([("activity_queue", "0011_payload")])
    try:
        Payload = apps.get_model("activity_queue", "Payload")
        Scheduled = apps.get_model("activity_queue", "ScheduledActivity")
        about = Payload.objects.create(activity_id="https://here.example/a/1",
                                       activity_type="Update", body="{}",
                                       object_id="https://here.example/notes/1")
        bare = Payload.objects.create(activity_id="https://here.example/a/2",
                                      activity_type="Follow", body="{}")
        object_key = import_module("activity_queue.migrations.0011_payload")._key
        inboxes = [f"https://{n}.example/inbox" for n in range(3)]
        for inbox in inboxes:
            Scheduled.objects.create(payload=about, inbox=inbox, host=inbox[:17],
                                     object_key=object_key(about.object_id))
        Scheduled.objects.create(payload=bare, inbox=inboxes[0], host=inboxes[0][:17])

        apps = migrate([("activity_queue", "0012_pair_key")])
        Scheduled = apps.get_model("activity_queue", "ScheduledActivity")
        keys = dict(Scheduled.objects.filter(payload_id=about.pk).values_list("inbox", "pair_key"))
        assert keys == {inbox: pair_key(about.object_id, inbox) for inbox in inboxes}
        assert len(set(keys.values())) == 3
        assert Scheduled.objects.get(payload_id=bare.pk).pair_key == 0

        apps = migrate([("activity_queue", "0011_payload")])
        Scheduled = apps.get_model("activity_queue", "ScheduledActivity")
        assert set(Scheduled.objects.filter(payload_id=about.pk)
                   .values_list("object_key", flat=True)) == {object_key(about.object_id)}
        assert Scheduled.objects.get(payload_id=bare.pk).object_key == 0
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes("activity_queue"))


def test_every_migration_reverses_and_applies_again():
    """From nothing to the latest and back: on MySQL and MariaDB the indexes over URL
    columns are prefixes, within InnoDB's key limit."""
    leaf = MigrationExecutor(connection).loader.graph.leaf_nodes("activity_queue")
    try:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate([("activity_queue", None)])
        tables = connection.introspection.table_names()
        assert not [t for t in tables if t.startswith("activity_queue_")]
    finally:
        migrate(leaf)
    delivered = connection.introspection.get_constraints(
        connection.cursor(), "activity_queue_activity")["aq_act_delivered"]
    assert delivered["columns"] == ["inbox", "object_id", "id"]
    follower = connection.introspection.get_constraints(
        connection.cursor(), "activity_queue_follower")["aq_follower_unique"]
    assert follower["unique"]
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT column_name, sub_part FROM information_schema.statistics"
                           " WHERE table_schema = DATABASE() AND index_name = %s"
                           " ORDER BY seq_in_index", ["aq_act_delivered"])
            assert cursor.fetchall() == (("inbox", 255), ("object_id", 255), ("id", None))


def test_a_follower_is_unique_over_whole_urls():
    """The same long object and inbox twice is refused; URLs that differ past the first
    255 characters are two followers (MySQL and MariaDB key them by a hash)."""
    from django.db import IntegrityError, transaction

    from activity_queue.models import Follower

    stem = "https://here.example/" + "n" * 300
    Follower.objects.create(object_id=stem + "/1", inbox=stem + "/inbox")
    Follower.objects.create(object_id=stem + "/2", inbox=stem + "/inbox")
    with pytest.raises(IntegrityError), transaction.atomic():
        Follower.objects.create(object_id=stem + "/1", inbox=stem + "/inbox")
    assert Follower.objects.count() == 2


def test_on_mysql_the_follower_key_is_a_digest_of_the_whole_urls(monkeypatch):
    """MySQL 8 has no hashed unique keys of its own (MariaDB has): the key is a functional
    key part. Written here, since the machines that run the tests have MariaDB only."""
    from django.db import connections

    from activity_queue.models import Follower

    fake = connections["default"]
    monkeypatch.setattr(fake, "vendor", "mysql")
    monkeypatch.setattr(fake, "mysql_is_mariadb", False, raising=False)
    editor = fake.SchemaEditorClass(fake, collect_sql=True)
    constraint, = Follower._meta.constraints
    q = editor.quote_name
    key = (f"UNIQUE KEY {q('aq_follower_unique')} "
           f"((SHA2(CONCAT_WS(0x0a, {q('object_id')}, {q('inbox')}), 256)))")
    assert constraint.constraint_sql(Follower, editor) == key
    assert constraint.create_sql(Follower, editor) == (
        f"ALTER TABLE {q('activity_queue_follower')} ADD {key}")
