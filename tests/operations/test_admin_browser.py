"""End to end in a real browser: an operator re-queues a failure and looks at the dashboard.

Needs Debian's Chromium (``apt-get update && apt-get install -y chromium``) and the
``playwright`` Python package, which drives that system browser (no browser download).
It fails, rather than skips, when either is missing, so CI cannot pass without running it.
"""

import os
import shutil
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from activity_queue.models import Follower, Host, PendingDiscovery, ScheduledActivity

from ..support.opsdata import log_row, outage, queued

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = os.environ.get("AQ_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GREEN, RED = (0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28)


@contextmanager
def chromium(profile: Path, width: int = 1280):
    """A fresh headless Chromium. Django's ORM refuses to run inside Playwright's event
    loop, so the test prepares its data before and checks the database after.
    With AQ_SCREENSHOT_DIR set, the pages seen are also saved there for a person to look at."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}; install it with "
                    "'apt-get update && apt-get install -y chromium' (or set AQ_CHROMIUM).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing; pip install -e '.[test]'")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": width, "height": 900})
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            context.close()


def operations_data():
    now = timezone.now()
    for hours_ago, sent, failed in ((1, 40, 2), (2, 55, 0), (5, 30, 6), (9, 70, 1), (20, 25, 3)):
        for _ in range(sent):
            log_row(status="sent", status_code=202, ago=timedelta(hours=hours_ago))
        for i in range(failed):
            log_row(inbox=f"https://h{i % 2}.example/inbox/", ago=timedelta(hours=hours_ago))
    Host.objects.create(host="https://h1.example", paused_until=now + timedelta(minutes=20),
                        trips=1, consecutive_failures=5, last_error="connection refused")
    queued(next_attempt_at=now + timedelta(minutes=3))
    return log_row(inbox="https://target.example/inbox/", status_code=410, error="HTTP 410 Gone",
                   ago=timedelta(minutes=10))


def test_operator_requeues_a_failure_and_sees_the_dashboard(live_server, django_user_model,
                                                              tmp_path):
    django_user_model.objects.create_superuser("admin", "admin@example.org", "s3cret-pass")
    target = operations_data()
    shot = tmp_path / "dashboard.png"
    with chromium(tmp_path / "profile") as browser:
        requeue_and_screenshot(browser.new_page(), live_server.url, target.pk, shot)
    assert ScheduledActivity.objects.filter(payload__activity_id=target.activity_id,
                                            inbox=target.inbox).count() == 1
    if os.environ.get("AQ_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["AQ_SCREENSHOT_DIR"]) / "dashboard.png")

    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.width >= 1000 and image.height >= 600
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is blank or nearly so"
    present = {c for _, c in colours}
    assert GREEN in present and RED in present, "the chart's bars are not on the screenshot"


def requeue_and_screenshot(page, base: str, pk: int, shot: Path) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/activity_queue/activity/"
              "%3Fstatus__exact%3Dfailed")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "s3cret-pass")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")
    assert "status__exact=failed" in page.url
    page.check(f'input[name="_selected_action"][value="{pk}"]')
    page.select_option('select[name="action"]', "requeue")
    page.click('button[name="index"]')
    message = page.locator("ul.messagelist li.success")
    message.wait_for()
    assert message.inner_text().strip() == "Re-queued 1 delivery."
    if os.environ.get("AQ_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["AQ_SCREENSHOT_DIR"]) / "requeued.png"))
        page.click(f'#result_list a[href*="/{pk}/change/"]')
        page.wait_for_selector("fieldset")
        page.screenshot(path=str(Path(os.environ["AQ_SCREENSHOT_DIR"]) / "detail.png"),
                        full_page=True)
        page.go_back()

    page.click("text=Dashboard")
    page.wait_for_selector(".aq-chart svg rect")
    assert page.locator("#aq-depth .aq-value").inner_text() == "2 rows"
    page.screenshot(path=str(shot), full_page=True)


#: Every list of the app: none may scroll sideways at 1400 px with the navigation sidebar open.
LISTS = ("scheduledactivity", "activity", "host", "follower", "pendingdiscovery")
FITS = """() => {
    const table = document.querySelector('#result_list');
    const box = table.parentElement;
    return {table: table.scrollWidth, box: box.clientWidth, boxScroll: box.scrollWidth,
            page: document.documentElement.scrollWidth, view: window.innerWidth};
}"""


def save(page, name: str, full_page: bool = True) -> None:
    if os.environ.get("AQ_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["AQ_SCREENSHOT_DIR"]) / name),
                        full_page=full_page)


def login(page, base: str, next_url: str) -> None:
    page.goto(f"{base}/admin/login/?next={next_url}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "s3cret-pass")
    page.click("input[type=submit]")


def test_during_an_outage_every_list_fits_1400px_and_paused_rows_say_so(
        live_server, django_user_model, tmp_path, receiver, worker):
    django_user_model.objects.create_superuser("admin", "admin@example.org", "s3cret-pass")
    host = outage(receiver, worker, tried=6, untried=2)
    operations_data()
    for kind in ("Follow", "Announce", "Note"):
        log_row(activity_type=kind, status="sent", status_code=202,
                inbox="https://a-rather-long-host-name.example.org/users/someone/inbox/",
                object_id="https://here.example/users/someone-with-a-long-name/notes/123456/")
    long_object = "https://here.example/users/someone-with-a-rather-long-name/circles/1234567/"
    Follower.objects.create(object_id=long_object,
                            inbox="https://a-rather-long-host-name.example.org/users/x/inbox/")
    PendingDiscovery.objects.create(
        resource="https://a-rather-long-host-name.example.org/users/someone/profile/",
        activity_type="Add", object_id=long_object, payload={"type": "Add"},
        last_error="inbox discovery: HTTP 503 fetching the document, the server said it is busy")
    until = timezone.localtime(Host.objects.get(host=host).paused_until)
    with chromium(tmp_path / "profile", width=1400) as browser:
        page = browser.new_page()
        login(page, live_server.url, "/admin/")
        page.wait_for_selector("#site-name")
        for model in LISTS:
            page.goto(f"{live_server.url}/admin/activity_queue/{model}/")
            page.wait_for_selector("#result_list")
            assert page.locator("#nav-sidebar").is_visible(), model
            sizes = page.evaluate(FITS)
            assert sizes["view"] == 1400
            assert sizes["table"] <= sizes["box"] and sizes["boxScroll"] <= sizes["box"], (
                model, sizes)
            assert sizes["page"] <= sizes["view"], (model, sizes)
            if model == "scheduledactivity":
                states = page.locator("#result_list td.field-state_label").all_inner_texts()
                paused = [s for s in states if s.startswith(f"paused until {until:%H:%M}")]
                assert len(paused) == 8 and sum("; retry at " in s for s in paused) == 6, states
                save(page, "scheduled-outage.png")
            elif model == "activity":
                types = page.locator("#changelist-filter").inner_text()
                assert all(kind in types for kind in ("Follow", "Announce", "Note"))
                failed = page.locator("#result_list tr:has(.aq-failed)").first
                colour = failed.locator("td").first.evaluate(
                    "td => getComputedStyle(td).backgroundColor")
                assert colour != "rgba(0, 0, 0, 0)", colour
                assert "Show all" not in page.locator("#toolbar").inner_text()

        # The dashboard ranks the paused host by its failures in a row.
        page.goto(f"{live_server.url}/admin/activity_queue/activity/dashboard/")
        page.wait_for_selector(".aq-chart svg")
        first = page.locator("#aq-failing-hosts tbody tr").first
        cells = first.locator("td").all_inner_texts()
        assert cells[:3] == [host, f"open until {until:%H:%M:%S}", "6"], cells
        assert page.locator("#aq-paused .aq-value").inner_text() == "2 hosts"
        assert page.locator('meta[http-equiv="refresh"]').get_attribute("content") == "30"
        save(page, "dashboard-outage.png")

        # Its page: the circuit, the queue, the last errors; Resume says what it did.
        first.locator("a").first.click()
        page.wait_for_selector("#aq-circuit")
        assert page.locator("#aq-circuit .aq-value").inner_text() == "open"
        assert f"paused until {until:%H:%M:%S} (in " in page.locator("#aq-circuit").inner_text()
        assert page.locator("#aq-paused .aq-value").inner_text() == "2"
        assert page.locator("#aq-backoff .aq-value").inner_text() == "6"
        assert "HTTP 500" in page.locator("#aq-queue-errors").inner_text()
        save(page, "host-overview.png")
        page.click("#aq-do-resume")
        message = page.locator("ul.messagelist li.success")
        message.wait_for()
        assert message.inner_text().startswith(
            "Resumed 1 host. 2 deliveries claimable now; 6 in backoff keep their time, the "
            "next due in "), message.inner_text()
        assert page.locator("#aq-circuit .aq-value").inner_text() == "closed"
    assert not Host.objects.filter(host=host).exists()
