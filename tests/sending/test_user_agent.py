"""The default User-Agent names the software, its version and the site."""

from importlib.metadata import version

import pytest
from django.db import transaction

from activity_queue import enqueue
from activity_queue.conf import default_user_agent, get_config

VERSION = version("activity_queue")
ACTIVITY = {"type": "Create", "object": {"@id": "https://a.example/circles/1/"}}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("configured", "site", "expected"), [
    (None, "https://a.example", f"activity_queue/{VERSION} (+https://a.example)"),
    ("mysite-bot/2.0", "https://a.example", "mysite-bot/2.0"),
    ("café-bot/2.0", "https://a.example", "café-bot/2.0"),
    # A header carries Latin-1 only: such a SITE_URL is left out rather than stopping the
    # transport, which could then send nothing at all.
    (None, "https://пример.example", f"activity_queue/{VERSION}"),
])
def test_deliveries_carry_it(receiver, worker, settings, configured, site, expected):
    settings.SITE_URL = site
    settings.ACTIVITY_QUEUE = {**settings.ACTIVITY_QUEUE, "USER_AGENT": configured}
    with transaction.atomic():
        enqueue(dict(ACTIVITY), to=receiver.url("/inbox/"))
    assert worker().run_once(timeout=20).sent == 1
    assert receiver.received[0].headers["User-Agent"] == expected


def test_it_follows_site_url(settings):
    settings.SITE_URL = "https://b.example"
    assert get_config().USER_AGENT == f"activity_queue/{VERSION} (+https://b.example)"
    settings.SITE_URL = None
    assert get_config().USER_AGENT == default_user_agent() == f"activity_queue/{VERSION}"


def test_version_is_the_packages():
    assert VERSION and VERSION[0].isdigit()
    assert "placeholder" not in default_user_agent() and "github.com/)" not in default_user_agent()
