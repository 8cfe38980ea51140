"""Marks that keep the task backends from flooding their runner with tasks.

Kept in the Celery broker's Redis, or in the site's shared cache for Django
Tasks. A burst of enqueues must not become one task each: a *wake mark*
says "a run is queued, or running and will look at the queue again", so an
enqueue sends a message only when it sets the mark, and a run clears it
before it claims (anything committed before that is claimed by the run;
anything after sends its own message). A *timer mark* holds the time of the
earliest pending self-scheduled run, so that runs do not multiply timers.

Both expire: a mark whose message was lost holds nothing back for long, and
the database, not the marks, says what is to be delivered.
"""

from __future__ import annotations

import threading
from typing import Protocol

from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache

#: Seconds a wake mark lives: the longest a lost wake-up message delays the next one.
WAKE_TTL = 10.0
#: Seconds a timer mark outlives its time (a late timer is replaced, not waited for).
TIMER_GRACE = 30.0

# Set KEYS[1] to ARGV[1] (the new timer's time) unless a timer that has not
# fired yet (now = ARGV[2] < time) is due no later; returns 1 if set.
_SET_TIMER = """
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current > tonumber(ARGV[2]) and current <= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""


class Marks(Protocol):
    def set_wake(self) -> bool: ...
    def clear_wake(self) -> None: ...
    def set_timer(self, at: float, now: float) -> bool: ...
    def forget(self) -> None: ...


class RedisMarks:
    """Marks shared by every web and Celery process, in the broker's Redis."""

    def __init__(self, client, namespace: str) -> None:
        self.client = client
        self.wake_key = f"{namespace}:wake"
        self.timer_key = f"{namespace}:timer"

    def set_wake(self) -> bool:
        """True if no run was queued: the caller sends one."""
        return bool(self.client.set(self.wake_key, b"1", nx=True, px=int(WAKE_TTL * 1000)))

    def clear_wake(self) -> None:
        self.client.delete(self.wake_key)

    def set_timer(self, at: float, now: float) -> bool:
        """True if no pending timer fires by ``at`` (epoch seconds): the caller sends one."""
        ttl = int((max(at - now, 0.0) + TIMER_GRACE) * 1000)
        return bool(self.client.eval(_SET_TIMER, 1, self.timer_key, repr(at), repr(now), ttl))

    def forget(self) -> None:
        self.client.delete(self.wake_key, self.timer_key)


class LocalMarks:
    """For brokers other than Redis: every enqueue sends a message; timers are
    de-duplicated within one process only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timer = 0.0

    def set_wake(self) -> bool:
        return True

    def clear_wake(self) -> None:
        pass

    def set_timer(self, at: float, now: float) -> bool:
        with self._lock:
            if now < self._timer <= at:
                return False
            self._timer = at
            return True

    def forget(self) -> None:
        with self._lock:
            self._timer = 0.0


class CacheMarks:
    """Marks in a cache that every process shares (Django's cache framework).

    ``add`` sets the wake mark only where none is, as Redis's ``SET NX`` does;
    the timer mark's read-then-write may race, which costs one extra timer.
    """

    def __init__(self, cache, namespace: str) -> None:
        self.cache = cache
        self.wake_key = f"{namespace}:wake"
        self.timer_key = f"{namespace}:timer"

    def set_wake(self) -> bool:
        return bool(self.cache.add(self.wake_key, 1, WAKE_TTL))

    def clear_wake(self) -> None:
        self.cache.delete(self.wake_key)

    def set_timer(self, at: float, now: float) -> bool:
        current = self.cache.get(self.timer_key)
        if current is not None and now < current <= at:
            return False
        self.cache.set(self.timer_key, at, max(at - now, 0.0) + TIMER_GRACE)
        return True

    def forget(self) -> None:
        self.cache.delete_many([self.wake_key, self.timer_key])


_clients: dict[str, object] = {}
_local: dict[str, LocalMarks] = {}
_lock = threading.Lock()


def marks_in_cache(cache, namespace: str) -> Marks:
    """Marks in ``cache``, unless it lives in one process only (then, as for brokers other
    than Redis, every enqueue sends a task: a mark another process cannot clear would hold
    back the next wake-up)."""
    if isinstance(cache, LocMemCache | DummyCache):
        with _lock:
            return _local.setdefault(namespace, LocalMarks())
    return CacheMarks(cache, namespace)


def marks_for(broker_url: str | None, namespace: str) -> Marks:
    """Marks in the broker's Redis when the broker is Redis, else in this process."""
    if broker_url and broker_url.split("://", 1)[0] in ("redis", "rediss"):
        with _lock:
            client = _clients.get(broker_url)
            if client is None:
                import redis

                client = redis.Redis.from_url(broker_url, socket_timeout=5,
                                              socket_connect_timeout=5)
                _clients[broker_url] = client
        return RedisMarks(client, namespace)
    with _lock:
        return _local.setdefault(namespace, LocalMarks())
