import pytest
from django.db import transaction

from activity_queue import enqueue
from activity_queue.models import Activity, ScheduledActivity

pytestmark = pytest.mark.django_db(transaction=True)


def test_deliver_and_log(receiver, worker):
    with transaction.atomic():
        rows = enqueue({"type": "Create", "object": {"@id": "https://x.example/1"}},
                       to=[receiver.url("/a/inbox/"), receiver.url("/b/inbox/")])
    assert len(rows) == 2
    report = worker().run_once(timeout=10)
    assert report.sent == 2
    assert ScheduledActivity.objects.count() == 0
    assert Activity.objects.filter(status="sent").count() == 2
    assert len(receiver.received) == 2
