from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from activity_queue import enqueue, signals
from activity_queue.conf import get_config
from activity_queue.models import Activity, Host, ScheduledActivity
from activity_queue.operations import actions as operations
from activity_queue.sending.backends import thread

from ..support.helpers import wait_until
from ..support.opsdata import log_row, queued

pytestmark = pytest.mark.django_db


def test_requeue_goes_through_enqueue_with_the_same_activity_id():
    failed = log_row(inbox="https://b.example/inbox/")
    result = operations.requeue([failed.pk])
    assert len(result.requeued) == 1 and result.skipped == 0
    row = ScheduledActivity.objects.get()
    assert (row.activity_id, row.inbox, row.host) == (failed.activity_id, failed.inbox,
                                                      "https://b.example")
    assert row.payload.document == failed.payload.document
    assert row.attempts == 0 and row.next_attempt_at <= timezone.now()


def test_requeue_never_duplicates_a_pending_delivery():
    failed = log_row()
    queued(activity_id=failed.activity_id, inbox=failed.inbox)
    result = operations.requeue([failed.pk])
    assert (len(result.requeued), result.pending) == (0, 1)
    assert ScheduledActivity.objects.count() == 1
    # And a second run after a first one is a no-op too.
    other = log_row()
    assert len(operations.requeue([other.pk]).requeued) == 1
    assert operations.requeue([other.pk]).pending == 1
    assert ScheduledActivity.objects.count() == 2


def test_only_the_latest_outcome_of_an_activity_and_inbox_is_requeued():
    old = log_row(ago=timedelta(hours=3))
    newer = log_row(activity_id=old.activity_id, inbox=old.inbox, ago=timedelta(hours=1))
    delivered = log_row(status="sent", status_code=202, ago=timedelta(hours=2))
    old_of_delivered = log_row(activity_id=delivered.activity_id, inbox=delivered.inbox,
                               ago=timedelta(hours=4))
    result = operations.requeue([old.pk, newer.pk, old_of_delivered.pk])
    assert [r.activity_id for r in result.requeued] == [newer.activity_id]
    assert result.superseded == 2
    # The same activity to another inbox is a different delivery.
    elsewhere = log_row(activity_id=old.activity_id, inbox="https://c.example/inbox/")
    assert len(operations.requeue([elsewhere.pk]).requeued) == 1


def test_requeue_skips_what_is_not_an_outbound_failure():
    rows = [log_row(status="sent"), log_row(status="dropped"),
            log_row(status="received", direction="in")]
    discarded = log_row(status="discarded")
    result = operations.requeue([r.pk for r in rows] + [discarded.pk, 999999])
    assert result.ineligible == 4
    assert [r.activity_id for r in result.requeued] == [discarded.activity_id]


def test_requeue_dry_run_decides_the_same_and_writes_nothing():
    a, b = log_row(), log_row()
    queued(activity_id=b.activity_id, inbox=b.inbox)
    result = operations.requeue([a.pk, b.pk], dry_run=True)
    assert [r.activity_id for r in result.requeued] == [a.activity_id]
    assert result.pending == 1
    assert ScheduledActivity.objects.count() == 1


def test_retry_now_makes_rows_due_but_leaves_leased_rows_alone():
    now = timezone.now()
    later = queued(next_attempt_at=now + timedelta(hours=2), attempts=2)
    leased = queued(next_attempt_at=now + timedelta(hours=2), leased_by="w1",
                    leased_until=now + timedelta(minutes=5))
    Host.objects.create(host="https://paused.example", paused_until=now + timedelta(hours=1),
                        trips=1, consecutive_failures=5)
    paused = queued(inbox="https://paused.example/inbox/", next_attempt_at=now + timedelta(hours=1))
    result = operations.retry_now([later.pk, leased.pk, paused.pk])
    assert (result.scheduled, result.skipped) == (2, 1)
    assert result.paused_hosts == ["https://paused.example"]
    later.refresh_from_db()
    leased.refresh_from_db()
    assert later.next_attempt_at <= timezone.now() and later.attempts == 2
    assert leased.next_attempt_at > timezone.now()


def test_discard_logs_then_deletes_and_signals_after_commit(django_capture_on_commit_callbacks):
    row = queued(attempts=4, last_status=503, last_error="HTTP 503")
    leased = queued(leased_by="w1", leased_until=timezone.now() + timedelta(minutes=5))
    seen = []

    def listener(sender, activities, by, **kwargs):
        seen.append(([a.activity_id for a in activities], by))

    signals.activity_discarded.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = operations.discard([row.pk, leased.pk], by="alice")
    finally:
        signals.activity_discarded.disconnect(listener)
    assert (len(result.discarded), result.skipped) == (1, 1)
    assert list(ScheduledActivity.objects.values_list("pk", flat=True)) == [leased.pk]
    log = Activity.objects.get()
    assert (log.status, log.status_code, log.attempts, log.activity_id) == (
        "discarded", 503, 4, row.activity_id)
    assert log.error == "discarded by alice; last error: HTTP 503"
    assert seen == [([row.activity_id], "alice")]


def test_a_discarded_delivery_can_be_requeued():
    row = queued()
    operations.discard([row.pk])
    log = Activity.objects.get()
    assert len(operations.requeue([log.pk]).requeued) == 1
    assert ScheduledActivity.objects.get().activity_id == row.activity_id


def test_resume_hosts_closes_the_circuit():
    Host.objects.create(host="https://a.example", paused_until=timezone.now() + timedelta(hours=1))
    assert Host.objects.get().circuit == "open"
    assert operations.resume_hosts(["https://a.example", "https://unknown.example"]) == 1
    assert not Host.objects.exists()


def test_resume_hosts_makes_the_rows_waiting_for_the_pause_due_now():
    now = timezone.now()
    until = now + timedelta(hours=1)
    Host.objects.create(host="https://a.example", consecutive_failures=5, trips=1,
                        paused_until=until)
    deferred = queued(inbox="https://a.example/inbox/", next_attempt_at=until)
    later = queued(inbox="https://a.example/inbox/", next_attempt_at=until + timedelta(hours=1))
    held = queued(inbox="https://a.example/inbox/", next_attempt_at=until, leased_by="w",
                  leased_until=now + timedelta(minutes=1))
    elsewhere = queued(inbox="https://b.example/inbox/", next_attempt_at=until)
    retry = queued(inbox="https://a.example/inbox/", next_attempt_at=now + timedelta(minutes=5))
    assert operations.resume_hosts(["https://a.example"]) == 1
    deferred.refresh_from_db()
    assert now <= deferred.next_attempt_at <= timezone.now()
    for row, at in ((later, until + timedelta(hours=1)), (held, until), (elsewhere, until),
                    (retry, now + timedelta(minutes=5))):
        row.refresh_from_db()
        assert row.next_attempt_at == at


@pytest.mark.django_db(transaction=True)
def test_retry_now_wakes_the_in_process_worker(receiver):
    # With a one-minute poll, only the wake-up can make this delivery happen quickly.
    with override_settings(ACTIVITY_QUEUE={"ALLOW_PRIVATE_ADDRESSES": True, "TIMEOUT": 2.0,
                                           "POLL_INTERVAL": 60.0}):
        get_config.cache_clear()
        row = queued(inbox=receiver.url("/inbox/"),
                     next_attempt_at=timezone.now() + timedelta(hours=1))
        queued(inbox=receiver.url("/warm-up/"))
        thread.start()
        try:
            # Once the due row is delivered the worker has nothing left and sleeps.
            assert wait_until(lambda: Activity.objects.filter(status="sent").count() == 1)
            operations.retry_now([row.pk])
            assert wait_until(lambda: Activity.objects.filter(status="sent").count() == 2)
        finally:
            thread.stop()
    assert [r.path for r in receiver.received] == ["/warm-up/", "/inbox/"]


def test_stop_hosts_fails_the_queue_and_new_enqueues_until_resumed():
    now = timezone.now()
    waiting = queued(inbox="https://a.example/inbox/", attempts=2, last_status=503,
                     last_error="HTTP 503")
    queued(inbox="https://a.example/other/", next_attempt_at=now + timedelta(hours=1))
    held = queued(inbox="https://a.example/inbox/", leased_by="w",
                  leased_until=now + timedelta(minutes=1))
    elsewhere = queued(inbox="https://b.example/inbox/")
    result = operations.stop_hosts(["https://a.example"], by="alice")
    assert (result.stopped, result.failed) == (["https://a.example"], 2)
    health = Host.objects.get()
    assert (health.unavailable_by, health.failing_since) == ("alice", None)
    assert set(ScheduledActivity.objects.values_list("id", flat=True)) == {held.id, elsewhere.id}
    logged = Activity.objects.get(activity_id=waiting.activity_id)
    assert (logged.status, logged.status_code, logged.attempts) == ("failed", 503, 2)
    assert logged.error.startswith("host unavailable: delivery stopped by alice on ")
    assert logged.error.endswith(" UTC; last error: HTTP 503")

    assert enqueue({"type": "Update", "object": "https://testserver/x"},
                   to="https://a.example/inbox/") == []
    assert operations.stop_hosts(["https://a.example"], by="bob").stopped == []

    assert operations.resume_hosts(["https://a.example"]) == 1
    assert not Host.objects.exists()
    assert len(enqueue({"type": "Update", "object": "https://testserver/y"},
                       to="https://a.example/inbox/")) == 1
