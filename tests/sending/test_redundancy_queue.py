"""The redundancy filter applied to the queue, rule by rule: at enqueue and before sending."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from activity_queue import enqueue, signals
from activity_queue.models import Activity, ScheduledActivity, pair_key
from activity_queue.net.addresses import origin
from activity_queue.sending import queue as store

from ..support.helpers import stored
from ..support.receiver import Rule

pytestmark = pytest.mark.django_db(transaction=True)

OBJ = "https://a.example/circles/1/"


def act(kind, owner="u1", obj=OBJ, **extra):
    return {"type": kind, "object": {"@id": obj, "owner": {"@id": owner}}, **extra}


def queued():
    return [(row.activity_type, row.payload.document["object"].get("owner", {}).get("@id"))
            for row in ScheduledActivity.objects.select_related("payload").order_by("pk")]


def dropped():
    return list(Activity.objects.filter(status="dropped").order_by("pk")
                .values_list("activity_type", "error"))


@pytest.fixture
def drops():
    seen = []

    def on_drop(sender, activity, inbox, reason, **kwargs):
        seen.append((activity["type"], inbox, reason))

    signals.activity_dropped.connect(on_drop)
    yield seen
    signals.activity_dropped.disconnect(on_drop)


@pytest.fixture
def inbox(receiver):
    return receiver.url("/inbox/")


# -- at enqueue -------------------------------------------------------------------------

def test_identical_pending_is_enough(inbox, drops):
    first = enqueue(act("Update"), inbox)
    again = enqueue(act("Update", id="https://a.example/activities/other"), inbox)
    assert len(first) == 1 and again == []
    assert queued() == [("Update", "u1")]
    assert dropped() == [("Update", "an identical activity is already queued for this inbox")]
    assert drops == [("Update", inbox, "an identical activity is already queued for this inbox")]


def test_identical_is_per_inbox(receiver):
    enqueue(act("Add"), receiver.url("/b/inbox/"))
    assert len(enqueue(act("Add"), [receiver.url("/b/inbox/"), receiver.url("/c/inbox/")])) == 1
    assert ScheduledActivity.objects.count() == 2


def test_newer_update_replaces_older_pending_update(inbox):
    enqueue(act("Update", "u1"), inbox)
    enqueue(act("Update", "u2"), inbox)
    enqueue(act("Update", "u3"), inbox)
    assert queued() == [("Update", "u3")]
    assert [t for t, _ in dropped()] == ["Update", "Update"]
    assert {e for _, e in dropped()} == {"replaced by a newer Update"}
    logged = Activity.objects.filter(status="dropped").order_by("pk")
    assert [a.payload.document["object"]["owner"]["@id"] for a in logged] == ["u1", "u2"]


def test_delete_makes_pending_update_moot(inbox, receiver, worker):
    enqueue(act("Create"), inbox)
    worker().run_once(timeout=10)  # the server now knows the object
    enqueue(act("Update", "u2"), inbox)
    enqueue(act("Create", obj="https://a.example/circles/2/"), inbox)  # another object
    enqueue({"type": "Delete", "object": {"@id": OBJ}}, inbox)
    assert [t for t, _ in queued()] == ["Create", "Delete"]
    assert dropped() == [("Update", "the object is deleted; a pending Delete follows")]


def test_create_and_delete_both_pending_cancel_out(inbox, drops):
    enqueue(act("Create"), inbox)
    enqueue(act("Update", "u2"), inbox)
    assert enqueue({"type": "Delete", "object": {"@id": OBJ}}, inbox) == []
    assert queued() == []
    assert sorted(t for t, _ in dropped()) == ["Create", "Delete", "Update"]
    assert len(drops) == 3


def test_create_and_delete_do_not_cancel_once_something_was_delivered(inbox, worker):
    enqueue(act("Add"), inbox)
    worker().run_once(timeout=10)
    enqueue(act("Create"), inbox)
    enqueue({"type": "Delete", "object": {"@id": OBJ}}, inbox)
    assert [t for t, _ in queued()] == ["Delete"]
    assert dropped() == [("Create", "the object is deleted; a pending Delete follows")]


def test_same_as_last_delivered_is_not_sent_again(inbox, receiver, worker):
    enqueue(act("Add"), inbox)
    worker().run_once(timeout=10)
    assert len(receiver.received) == 1
    # a new worker, as after a restart: the rule reads the log, not memory
    assert enqueue(act("Add", published="2030-01-01T00:00:00Z"), inbox) == []
    assert dropped() == [("Add", "identical to the last activity delivered to this inbox for "
                                 "this object")]
    assert len(enqueue(act("Add", "u2"), inbox)) == 1


def test_failed_or_dropped_deliveries_do_not_count_as_delivered(receiver, worker):
    gone = receiver.url("/gone/inbox/")
    receiver.rules["/gone/inbox/"] = Rule(status=410)
    enqueue(act("Add"), gone)
    worker().run_once(timeout=10)
    assert Activity.objects.get().status == "failed"
    assert len(enqueue(act("Add"), gone)) == 1


def test_in_flight_rows_are_never_dropped(inbox):
    enqueue(act("Update", "u1"), inbox)
    [job] = store.claim("other-worker", 10, 60)
    enqueue(act("Update", "u2"), inbox)
    assert queued() == [("Update", "u1"), ("Update", "u2")]
    assert dropped() == []
    enqueue(act("Update", "u1"), inbox)  # identical to the one in flight, u2 between
    assert queued() == [("Update", "u1"), ("Update", "u1")]
    assert dropped() == [("Update", "replaced by a newer Update")]


def test_a_row_in_flight_when_its_delete_came_is_checked_at_its_next_claim(inbox):
    from activity_queue.sending import drops as dropping

    enqueue(act("Create"), inbox)
    [job] = store.claim("w", 10, 60)
    assert not job.has_predecessor
    enqueue({"type": "Delete", "object": {"@id": OBJ}}, inbox)  # the Create is in flight
    assert [t for t, _ in queued()] == ["Create", "Delete"]
    store.release("w", [job.id])  # it failed; the Delete waits behind it
    # Its retry is claimed alone (as a half-open circuit's single probe is): it must not go
    # out with its Delete pending.
    [retry] = store.claim("w", 1, 60)
    assert retry.id == job.id and retry.has_predecessor
    keep, gone, _ = dropping.on_claim("w", [retry], "default")
    assert (keep, gone) == ([], 2)
    assert queued() == []


def test_expired_lease_counts_as_pending(inbox):
    enqueue(act("Update", "u1"), inbox)
    store.claim("dead-worker", 10, 60)
    ScheduledActivity.objects.update(leased_until=timezone.now() - timedelta(seconds=1))
    enqueue(act("Update", "u2"), inbox)
    assert queued() == [("Update", "u2")]


def test_drops_follow_the_callers_transaction(inbox, drops):
    enqueue(act("Update", "u1"), inbox)
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue(act("Update", "u2"), inbox)
        assert queued() == [("Update", "u2")]
        assert drops == []  # signals wait for the commit
        raise RuntimeError
    assert queued() == [("Update", "u1")] and dropped() == [] and drops == []
    with transaction.atomic():
        enqueue(act("Update", "u2"), inbox)
        assert drops == []
    assert len(drops) == 1


def _queries(call):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as context:
        call()
    return len(context)


def test_no_extra_query_for_a_lone_activity(inbox, settings):
    enqueue(act("Update", "u1"), "https://elsewhere.example/inbox/")
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "DROP_REDUNDANT": False}
    without = _queries(lambda: enqueue(act("Update", "u0"), "https://x.example/inbox/"))
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "DROP_REDUNDANT": True}
    lone = _queries(lambda: enqueue(act("Update", "u1"), [inbox, "https://c.example/inbox/"]))
    assert lone == without
    # something about the object is queued for the inbox: one lookup
    after = _queries(lambda: enqueue(act("Add", "m1"), [inbox, "https://d.example/inbox/"]))
    assert after == without + 1


def test_activities_without_object_are_not_filtered(inbox, settings):
    with_filter = _queries(lambda: enqueue({"type": "Like"}, inbox))
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "DROP_REDUNDANT": False}
    assert _queries(lambda: enqueue({"type": "Like"}, inbox)) == with_filter
    assert ScheduledActivity.objects.count() == 2


def test_setting_turns_the_filter_off(inbox, settings):
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "DROP_REDUNDANT": False}
    enqueue(act("Update"), inbox)
    enqueue(act("Update"), inbox)
    assert ScheduledActivity.objects.count() == 2


# -- before sending -----------------------------------------------------------------------

@pytest.fixture
def unfiltered(settings):
    """Enqueue without the filter, as if the rows came in by another way (or a race)."""
    def put(activity, inbox, **options):
        settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "DROP_REDUNDANT": False}
        try:
            return enqueue(activity, inbox, **options)
        finally:
            settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "DROP_REDUNDANT": True}
    return put


def bodies(receiver):
    return [(b["type"], (b["object"].get("owner") or {}).get("@id")) for b in receiver.bodies()]


def test_before_sending_identical(unfiltered, inbox, receiver, worker):
    unfiltered(act("Add"), inbox)
    unfiltered(act("Add"), inbox)
    report = worker().run_once(timeout=10)
    assert (report.sent, report.dropped) == (1, 1)
    assert bodies(receiver) == [("Add", "u1")]


def test_before_sending_superseded_update(unfiltered, inbox, receiver, worker):
    unfiltered(act("Update", "u1"), inbox)
    unfiltered(act("Update", "u2"), inbox)
    report = worker().run_once(timeout=10)
    assert (report.sent, report.dropped) == (1, 1)
    assert bodies(receiver) == [("Update", "u2")]
    assert dropped() == [("Update", "replaced by a newer Update")]


def test_before_sending_create_delete(unfiltered, inbox, receiver, worker, drops):
    unfiltered(act("Create"), inbox)
    unfiltered({"type": "Delete", "object": {"@id": OBJ}}, inbox)
    report = worker().run_once(timeout=10)
    assert (report.claimed, report.dropped) == (0, 2)
    assert receiver.received == [] and not ScheduledActivity.objects.exists()
    assert len(drops) == 2


def test_before_sending_moot_by_delete_with_a_row_not_yet_due(unfiltered, inbox, receiver,
                                                               worker):
    unfiltered(act("Add"), inbox)
    worker().run_once(timeout=10)
    unfiltered(act("Update", "u2"), inbox)
    unfiltered({"type": "Delete", "object": {"@id": OBJ}}, inbox, delay=60)
    report = worker().run_once(timeout=10)
    assert report.dropped == 1 and report.claimed == 0
    assert [t for t, _ in queued()] == ["Delete"]


def test_before_sending_already_delivered(unfiltered, inbox, receiver, worker):
    unfiltered(act("Add"), inbox)
    worker().run_once(timeout=10)
    unfiltered(act("Add"), inbox)
    report = worker().run_once(timeout=10)
    assert report.dropped == 1 and len(receiver.received) == 1


def test_a_row_held_by_another_worker_is_left_alone(unfiltered, inbox, receiver, worker):
    unfiltered(act("Update", "u1"), inbox)
    store.claim("other-worker", 1, 60)
    unfiltered(act("Update", "u1"), inbox)
    report = worker().run_once(timeout=10)
    # the identical copy goes instead, and the in-flight one is untouched
    assert report.dropped == 1 and report.sent == 0
    assert ScheduledActivity.objects.get().leased_by == "other-worker"


def test_order_is_kept_per_inbox_and_object(unfiltered, inbox, receiver, worker):
    unfiltered(act("Add", "m1"), inbox)
    unfiltered(act("Remove", "m1"), inbox)
    unfiltered(act("Add", "m2", obj="https://a.example/circles/2/"), inbox)
    w = worker()
    first = w.run_once(timeout=10)
    assert first.sent == 2 and first.released == 1  # the Remove waits for its Add
    assert bodies(receiver) in ([("Add", "m1"), ("Add", "m2")], [("Add", "m2"), ("Add", "m1")])
    row = ScheduledActivity.objects.get()
    assert row.activity_type == "Remove" and row.attempts == 0 and not row.leased_by
    assert row.next_attempt_at > timezone.now()
    ScheduledActivity.objects.update(next_attempt_at=timezone.now())
    assert w.run_once(timeout=10).sent == 1
    assert bodies(receiver)[-1] == ("Remove", "m1")


def test_a_younger_activity_waits_while_an_older_one_retries(unfiltered, receiver, worker):
    inbox = receiver.url("/slow/inbox/")
    receiver.rules["/slow/inbox/"] = Rule(sequence=[503, 202])
    unfiltered(act("Add", "m1"), inbox)
    unfiltered(act("Remove", "m1"), inbox)
    w = worker()
    assert w.run_once(timeout=10).retried == 1
    ScheduledActivity.objects.filter(payload__activity_type="Remove").update(
        next_attempt_at=timezone.now())
    report = w.run_once(timeout=10)
    assert report.claimed == 0 and report.released == 1
    assert [b["type"] for b in receiver.bodies("/slow/inbox/")] == ["Add"]


# -- which rows the checks look at -------------------------------------------------------

def flags():
    return list(ScheduledActivity.objects.order_by("pk")
                .values_list("payload__activity_type", "inbox", "has_predecessor"))


def test_lone_activities_are_written_unflagged(receiver):
    b, c = receiver.url("/b/inbox/"), receiver.url("/c/inbox/")
    enqueue(act("Create"), [b, c])
    enqueue(act("Create", obj="https://a.example/circles/2/"), b)
    enqueue({"type": "Like"}, b)  # no object: nothing to check
    assert [f for _, _, f in flags()] == [False, False, False, False]


def test_a_second_activity_about_the_object_is_flagged_for_that_inbox_only(receiver):
    b, c = receiver.url("/b/inbox/"), receiver.url("/c/inbox/")
    enqueue(act("Add", "m1"), b)
    enqueue(act("Remove", "m1"), [b, c])
    assert flags() == [("Add", b, False), ("Remove", b, True), ("Remove", c, False)]


def test_a_delivered_predecessor_flags_the_row(inbox, worker):
    enqueue(act("Add", "m1"), inbox)
    worker().run_once(timeout=10)
    enqueue(act("Remove", "m1"), inbox)
    assert flags() == [("Remove", inbox, True)]


def test_only_delivered_activities_count_as_predecessors(receiver, worker):
    gone = receiver.url("/gone/inbox/")
    receiver.rules["/gone/inbox/"] = Rule(status=410)
    enqueue(act("Add", "m1"), gone)
    worker().run_once(timeout=10)
    enqueue(act("Remove", "m1"), gone)
    assert flags() == [("Remove", gone, False)]


def test_the_flag_is_written_with_the_filter_off(unfiltered, inbox):
    unfiltered(act("Update", "u1"), inbox)
    unfiltered(act("Update", "u2"), inbox)
    assert [f for _, _, f in flags()] == [False, True]


def test_a_flagged_activity_is_held_back_behind_one_in_flight(inbox, receiver, worker):
    enqueue(act("Add", "m1"), inbox)
    [held] = store.claim("other-worker", 10, 60)
    assert not held.has_predecessor
    enqueue(act("Remove", "m1"), inbox)
    report = worker().run_once(timeout=10)
    assert (report.claimed, report.released) == (0, 1)
    assert receiver.received == []


def test_an_unflagged_activity_behind_a_flagged_one_is_sent_first(inbox, receiver, worker):
    enqueue(act("Add", "m1"), inbox)
    enqueue(act("Remove", "m1"), inbox)
    report = worker().run_once(timeout=10)
    assert (report.sent, report.released) == (1, 1)
    assert bodies(receiver) == [("Add", "m1")]


def test_rows_written_another_way_are_checked(inbox, receiver, worker):
    enqueue(act("Add"), inbox)
    worker().run_once(timeout=10)
    body = act("Add", id="https://a.example/activities/again")
    row = ScheduledActivity.objects.create(
        inbox=inbox, host=receiver.url("").rstrip("/"), payload=stored(body, OBJ))
    row.refresh_from_db()
    assert row.has_predecessor  # the database default
    report = worker().run_once(timeout=10)
    assert (report.claimed, report.dropped) == (0, 1)
    assert len(receiver.received) == 1


def test_two_unflagged_rows_of_one_pair_in_a_claim_are_checked(inbox, receiver, worker):
    """As when two transactions enqueue about one object at the same time."""
    for n in (1, 2):
        body = act("Add", id=f"https://a.example/activities/{n}")
        ScheduledActivity.objects.create(
            inbox=inbox, host=receiver.url("").rstrip("/"), payload=stored(body, OBJ),
            has_predecessor=False)
    report = worker().run_once(timeout=10)
    assert (report.sent, report.dropped) == (1, 1)


def test_the_claim_check_costs_no_query_for_unflagged_rows(receiver):
    from activity_queue.sending import drops as dropping

    b, c = receiver.url("/b/inbox/"), receiver.url("/c/inbox/")
    enqueue(act("Create"), [b, c])
    enqueue(act("Create", obj="https://a.example/circles/2/"), b)
    jobs = store.claim("w", 10, 60)
    assert _queries(lambda: dropping.on_claim("w", jobs, "default")) == 0
    enqueue(act("Update", "u2"), c)
    [job] = store.claim("w", 10, 60)
    assert job.has_predecessor
    # the lookup, then giving it back: the Create to that inbox is still queued
    assert _queries(lambda: dropping.on_claim("w", [job], "default")) == 2


def test_rows_of_other_pairs_do_not_count_toward_the_cap(receiver):
    from activity_queue.sending import drops as dropping

    b, c = receiver.url("/b/inbox/"), receiver.url("/c/inbox/")
    other = "https://a.example/circles/2/"
    ScheduledActivity.objects.bulk_create([
        ScheduledActivity(inbox=b, host=origin(b), pair_key=pair_key(other, b), payload=stored(
            act("Add", str(n), obj=other, id=f"https://a.example/activities/{n}"), other))
        for n in range(dropping.ROW_CAP + 1)])
    enqueue(act("Add"), b)
    enqueue(act("Add", obj=other), c)
    found = dropping.lookup("default", [(b, OBJ), (c, other)], timezone.now())
    assert found is not None
    queued_rows, delivered = found
    assert {pair: len(rows) for pair, rows in queued_rows.items()} == {(b, OBJ): 1,
                                                                      (c, other): 1}
    assert delivered == {}
