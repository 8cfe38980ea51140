"""Sentry as a site sets it up, with a transport that keeps events in memory."""

import sentry_sdk
from sentry_sdk.transport import Transport


class CapturingTransport(Transport):
    """Keeps every envelope in memory instead of sending it anywhere."""

    def __init__(self, options=None):
        super().__init__(options)
        self.envelopes = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)

    def events(self) -> list[dict]:
        found = [envelope.get_event() for envelope in self.envelopes]
        return [event for event in found if event is not None]


def start_capturing() -> CapturingTransport:
    """sentry-sdk initialised as a site would, with a capturing transport."""
    sentry_sdk.init(dsn="https://key@sentry.invalid/1", transport=CapturingTransport,
                    auto_enabling_integrations=False)
    return sentry_sdk.get_client().transport


def stop_capturing() -> None:
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    assert not sentry_sdk.get_client().is_active()
