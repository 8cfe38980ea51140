"""Helpers shared by the federation tests: a remote server played by the receiver."""

from __future__ import annotations

import time
from dataclasses import dataclass

from activity_queue.models import PendingDiscovery, ScheduledActivity
from example_project.circles.models import Member


@dataclass
class Remote:
    """A remote server on the loopback receiver: users with documents and an inbox."""

    receiver: object
    prefix: str = "/b"

    @property
    def inbox(self) -> str:
        return self.receiver.url(f"{self.prefix}/inbox/")

    def user(self, n: int, *, inbox: bool = True) -> Member:
        """The local record of remote user ``n``, whose document names the inbox."""
        path = f"{self.prefix}/users/{n}/"
        url = self.receiver.url(path)
        doc = {"@id": url, "@type": "foaf:user"}
        if inbox:
            doc["inbox"] = self.inbox
        self.receiver.document(path, doc)
        return Member.objects.create(urlid=url, name=f"remote {n}")

    def posts(self) -> list[dict]:
        return self.receiver.bodies(f"{self.prefix}/inbox/")


def drain(worker, timeout: float = 15.0) -> None:
    """Resolve pending discoveries and deliver everything, until nothing is left."""
    w = worker if not callable(worker) else worker()
    deadline = time.monotonic() + timeout
    while ScheduledActivity.objects.exists() or PendingDiscovery.objects.exists():
        if time.monotonic() > deadline:
            raise AssertionError("the queue did not drain")
        if not w.run_once(timeout=timeout).claimed:
            time.sleep(0.05)  # rows held back for ordering are due again shortly


def shape(body: dict) -> tuple:
    """What matters in a received backlink: type, object id, target/origin id."""
    other = body.get("target") or body.get("origin") or {}
    return (body["type"], body["object"]["@id"], other.get("@id"))

