"""The network side: one asyncio loop, one HTTP client session, bounded concurrency.

An event loop holds thousands of slow inboxes open without a thread each and
costs a fraction of a thread pool's CPU per request (SPEC §3), so deliveries
run here, in a thread of their own (on uvloop when it is installed), through
the lean client of :mod:`activity_queue.net.http11`, while the database side
stays in the caller's thread. Jobs come in through :meth:`Transport.submit`; outcomes go
out through the callback, from the loop's thread.

Admission is per host: a host with all its slots busy waits in its own line
and never holds one of the ``WORKERS`` global slots while it waits, so a dead
inbox cannot block healthy ones. A host's slots are its window in the
worker's :class:`~activity_queue.sending.hosts.HostBook`: two at first,
doubled by each answer up to ``PER_HOST``, halved by each timeout or
connection failure down to one. A black-holed host thus ties up one or two
global slots while its requests time out, not ``PER_HOST`` of them.

A signed delivery is signed by its activity's actor's key or the site's
(:meth:`Transport.signer_for`), in the signing threads of :mod:`.signing_threads`,
as soon as it arrives (:meth:`Transport._presign`), so that the signature is ready
when a slot frees. A 401 to a signed POST is answered at once by the same request
signed with the other scheme (a double knock, :meth:`Transport._post`); the scheme a
host accepted that way is tried first from then on, by every worker (``HostBook.schemes``,
``Host.signature_scheme``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

from ..conf import Config
from ..exceptions import UnsafeDestination
from ..lifecycle import State
from ..net import http11, signing
from ..net.addresses import (
    check_literal_address,
    check_url,
    forbidden_address,
    is_ip_literal,
    origin,
)
from ..net.signing import Signer, first_scheme
from .hosts import HostBook
from .jobs import Job, Outcome
from .retry import RETRYABLE_STATUSES, classify_status, parse_retry_after
from .signing_threads import SigningThreads

logger = logging.getLogger(__name__)

CONTENT_TYPE = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
ACCEPT = "application/activity+json, application/ld+json, */*"
MAX_REDIRECTS = 3
#: The whole exchange, from the request written to the response read, is cut after this
#: many times ``TIMEOUT``: bytes trickling in keep the read timeout away, not this one.
TOTAL_TIMEOUTS = 3
#: The setting behind each limit of the HTTP client, named when the limit runs out.
LIMIT_SETTINGS = {"connect": "TIMEOUT", "read": "TIMEOUT",
                  "total": f"{TOTAL_TIMEOUTS} × TIMEOUT"}
REDIRECTS = frozenset({301, 302, 307, 308})
#: A 303 answers a POST with "look over there" (a GET): the inbox took nothing.
SEE_OTHER = "303 See Other: the inbox did not accept the POST, not following"

#: Why a job goes back unsent when its worker could not renew its lease in time.
LEASE_ENDING = "not attempted: the lease was ending or lost"



class SystemResolver:
    """The system's resolver (``getaddrinfo`` off the loop), answers cached for ``ttl`` s."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._cache: dict[tuple[str, int, int], tuple[float, list[dict[str, Any]]]] = {}

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_UNSPEC
                      ) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        key = (host, port, family)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > loop.time():
            return hit[1]
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        answers = [{"hostname": host, "host": sockaddr[0], "port": port, "family": fam,
                    "proto": proto, "flags": socket.AI_NUMERICHOST}
                   for fam, _, proto, _, sockaddr in infos]
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (loop.time() + self.ttl, answers)
        return answers

    async def close(self) -> None:
        self._cache.clear()


class GuardedResolver:
    """Resolves names, then drops every address an inbox may not have.

    Checking at connection time (not before) means a DNS answer cannot change
    between the check and the connection, and redirects are covered too.
    ``inner`` is the resolver asked first (:class:`SystemResolver` unless given).
    """

    def __init__(self, allow_private: bool, inner: Any = None) -> None:
        self._inner = inner or SystemResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_UNSPEC) -> list:
        answers = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return answers
        safe = [a for a in answers if not forbidden_address(a["host"])]
        if not safe:
            kinds = sorted({forbidden_address(a["host"]) or "" for a in answers})
            raise UnsafeDestination(
                f"{host} resolves only to {'/'.join(kinds)} addresses; "
                "set ACTIVITY_QUEUE['ALLOW_PRIVATE_ADDRESSES'] to deliver there"
            )
        return safe

    async def close(self) -> None:
        await self._inner.close()


def redirect_target(url: str, location: str | None) -> str:
    """The absolute URL a redirect points to; ValueError when it points nowhere usable.

    Retrying cannot mend a server's broken ``Location``, so the caller makes
    this a final failure rather than leaving it to surface as a network error.
    """
    if not location:
        raise ValueError("without a Location header")
    if any(ord(c) < 33 or ord(c) == 127 for c in location):
        raise ValueError(f"to an invalid Location {location[:200]!r}: "
                         "whitespace or control characters")
    try:
        target = urljoin(url, location)
        _ = urlsplit(target).port  # raises on a port out of range or not a number
    except ValueError as exc:
        raise ValueError(f"to an invalid Location {location[:200]!r}: {exc}") from None
    return target


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed: it halves the loop's share of a delivery's CPU."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Transport:
    """Delivers jobs concurrently and reports one :class:`Outcome` per job."""

    def __init__(self, config: Config, on_outcome: Callable[[Outcome], None],
                 hosts: HostBook, signer: Signer | None = None,
                 may_start: Callable[[Job], bool] | None = None) -> None:
        self.config = config
        self.on_outcome = on_outcome
        self.hosts = hosts
        self.signer = signer
        #: Asked, from the loop's thread, just before a job's request starts; a job it
        #: refuses goes back undelivered (its lease is about to end, or was lost).
        self.may_start = may_start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._client: http11.Client | None = None
        self._head = b""
        self._probe_head = b""
        self._queues: dict[str, deque[Job]] = {}
        self._inflight: dict[str, int] = {}
        self._tasks: dict[asyncio.Task, Job] = {}
        self._runnable: deque[str] = deque()
        self._runnable_set: set[str] = set()
        self._closing = False
        self._failure: BaseException | None = None
        self._signing: SigningThreads | None = None
        #: Signatures asked for as jobs arrive, before a slot frees: job id -> (url, scheme,
        #: future of the signed headers).
        self._presigned: dict[int, tuple[str, str, asyncio.Future]] = {}

    # -- thread-side API -------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="activity-queue-http",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            self._thread = None
            raise RuntimeError("activity_queue: the HTTP transport did not start") \
                from self._failure

    def submit(self, jobs: Iterable[Job]) -> None:
        jobs = list(jobs)
        if jobs:
            self._loop.call_soon_threadsafe(self._accept, jobs)

    def pause(self, hosts: Iterable[str]) -> None:
        """Hand back, undelivered, what waits for these hosts (their circuit opened; the
        worker has marked them paused in its book, so nothing new for them is sent)."""
        hosts = set(hosts)
        if hosts and self._loop:
            self._loop.call_soon_threadsafe(self._pause, hosts)

    def trim(self, hosts: Iterable[str]) -> None:
        """Hand back, undelivered, what waits for these hosts (they stopped answering),
        so that their rows do not sit here behind one slow slot."""
        hosts = set(hosts)
        if hosts and self._loop:
            self._loop.call_soon_threadsafe(self._trim, hosts)

    def probe(self, host: str) -> concurrent.futures.Future:
        """GET the origin ``host`` (an unavailable one): the future's result is None when
        it answered (any status but 408, 425, 429 and 5xx: those say it is unwell), else
        what went wrong."""
        return asyncio.run_coroutine_threadsafe(self._probe(host), self._loop)

    def stop(self, grace: float) -> None:
        """Stop: queued jobs come back DEFERRED, in-flight ones get ``grace`` seconds."""
        if self._thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(grace), self._loop)
        future.result(grace + 30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._thread = None

    # -- loop side -------------------------------------------------------

    def _run(self) -> None:
        loop = new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            if self._signing is not None:
                self._signing.close()
            self._client.close()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _open(self) -> None:
        cfg = self.config
        resolver = GuardedResolver(cfg.ALLOW_PRIVATE_ADDRESSES)

        async def resolve(host: str, port: int) -> list[str]:
            if is_ip_literal(host):  # already checked by check_literal_address
                return [host]
            return [answer["host"] for answer in await resolver.resolve(host, port)]

        self._client = http11.Client(
            resolve, connect_timeout=cfg.TIMEOUT, read_timeout=cfg.TIMEOUT,
            total_timeout=cfg.TIMEOUT * TOTAL_TIMEOUTS, max_body=cfg.MAX_RESPONSE_BYTES,
            keepalive=30.0, max_idle=max(256, 2 * cfg.WORKERS))
        self._head = header_lines({"User-Agent": cfg.USER_AGENT, "Content-Type": CONTENT_TYPE,
                                   "Accept": ACCEPT})
        self._probe_head = header_lines({"User-Agent": cfg.USER_AGENT, "Accept": "*/*"})

    def _accept(self, jobs: list[Job]) -> None:
        for job in jobs:
            if self._closing or job.host in self.hosts.paused:
                self._emit(Outcome(job, State.PENDING, error="not attempted"))
                continue
            queue = self._queues.get(job.host)
            if queue is None:
                queue = self._queues[job.host] = deque()
            queue.append(job)
            self._presign(job)
            self._mark_runnable(job.host)
        self._pump()

    def _mark_runnable(self, host: str) -> None:
        if host not in self._runnable_set and self._inflight.get(host, 0) < self.hosts.slots(host):
            self._runnable_set.add(host)
            self._runnable.append(host)

    def _pump(self) -> None:
        limit = self.config.WORKERS
        while len(self._tasks) < limit and self._runnable:
            host = self._runnable.popleft()
            self._runnable_set.discard(host)
            queue = self._queues.get(host)
            if not queue:
                continue
            job = queue.popleft()
            if not queue:
                del self._queues[host]
            if self.may_start is not None and not self.may_start(job):
                self._emit(Outcome(job, State.PENDING, error=LEASE_ENDING))
                if queue:
                    self._mark_runnable(host)
                continue
            count = self._inflight.get(host, 0) + 1
            self._inflight[host] = count
            task = self._loop.create_task(self._deliver(job))
            self._tasks[task] = job
            task.add_done_callback(self._finished)
            if queue and count < self.hosts.slots(host):
                self._runnable_set.add(host)
                self._runnable.append(host)

    def _finished(self, task: asyncio.Task) -> None:
        job = self._tasks.pop(task)
        count = self._inflight[job.host] - 1
        if count:
            self._inflight[job.host] = count
        else:
            del self._inflight[job.host]
        if task.cancelled():  # its request may have reached the receiver: an attempt
            self._emit(Outcome(job, State.RETRYING, error="cancelled at shutdown"))
        elif task.exception() is not None:  # _deliver catches everything; belt and braces
            self._emit(Outcome(job, State.RETRYING, error=repr(task.exception())))
        else:
            outcome = task.result()
            if outcome.state is not State.PENDING:
                self.hosts.adjust_window(outcome, self._busy_hosts)
            self._emit(outcome)
        if job.host in self._queues:
            self._mark_runnable(job.host)
        self._pump()

    def _busy_hosts(self) -> set[str]:
        return self._queues.keys() | self._inflight.keys()

    def _pause(self, hosts: set[str]) -> None:
        self._hand_back(hosts, "host paused")

    def _trim(self, hosts: set[str]) -> None:
        self._hand_back(hosts, "host not answering")

    def _hand_back(self, hosts: set[str], why: str) -> None:
        """What waits for these hosts goes back undelivered, no attempt counted."""
        for host in hosts:
            for job in self._queues.pop(host, ()):
                self._emit(Outcome(job, State.PENDING, error=why))

    async def _shutdown(self, grace: float) -> None:
        self._closing = True
        self._pause(set(self._queues))
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

    def _emit(self, outcome: Outcome) -> None:
        presigned = self._presigned.pop(outcome.job.id, None)
        if presigned is not None:
            _discard(presigned[2])
        try:
            self.on_outcome(outcome)
        except Exception:  # the DB side must never kill the loop
            logger.exception("activity_queue: outcome callback failed")

    async def _deliver(self, job: Job) -> Outcome:
        started = time.perf_counter()
        try:
            outcome = await self._post(job)
        except UnsafeDestination as exc:
            outcome = Outcome(job, State.FAILED, error=f"refused: {exc}")
        except http11.Timeout as exc:
            outcome = Outcome(job, State.RETRYING, error=f"{exc} ({LIMIT_SETTINGS[exc.limit]})",
                              host_fault=True)
        except http11.ProtocolError as exc:
            outcome = Outcome(job, State.RETRYING, error=f"bad response: {exc}", host_fault=True)
        except OSError as exc:  # includes TLS errors (a certificate may be renewed)
            outcome = Outcome(job, State.RETRYING, error=f"connection failed: {describe(exc)}",
                              host_fault=True)
        except ValueError as exc:  # a URL or header no retry can mend
            outcome = Outcome(job, State.FAILED, error=f"refused: {exc}")
        except Exception as exc:
            logger.exception("activity_queue: unexpected error delivering %s", job.id)
            outcome = Outcome(job, State.RETRYING, error=f"{type(exc).__name__}: {exc}")
        outcome.duration_ms = (time.perf_counter() - started) * 1000
        return outcome

    async def _probe(self, host: str) -> str | None:
        url = host + "/"
        try:
            check_url(url)
            check_literal_address(url, self.config.ALLOW_PRIVATE_ADDRESSES)
            resp = await self._client.request(b"GET", url, self._probe_head)
        except UnsafeDestination as exc:
            return f"refused: {exc}"
        except http11.Timeout as exc:
            return f"{exc} ({LIMIT_SETTINGS[exc.limit]})"
        except http11.ProtocolError as exc:
            return f"bad response: {exc}"
        except OSError as exc:
            return f"connection failed: {describe(exc)}"
        except ValueError as exc:
            return f"refused: {exc}"
        return f"HTTP {resp.status}" if resp.status in RETRYABLE_STATUSES else None

    def signer_for(self, job: Job) -> Signer | None:
        """The signer of this job's requests: its actor's key (``ACTOR_KEYS``), else the
        site's."""
        return job.signer or self.signer

    def scheme_for(self, job: Job) -> str:
        """The signature scheme tried first: the one the job's host last accepted after a
        double knock, else ``SIGNATURE_SCHEME`` or the signer's key type's
        (:func:`~activity_queue.net.signing.first_scheme`)."""
        return self.hosts.schemes.get(job.host) or first_scheme(self.signer_for(job),
                                                                self.config.SIGNATURE_SCHEME)

    def _threads(self) -> SigningThreads | None:
        if self._signing is None and signing_threads(self.config) > 0:
            self._signing = SigningThreads(self._loop, signing_threads(self.config))
        return self._signing

    def _presign(self, job: Job) -> None:
        """Have the signing threads sign a job as it arrives: its signature is made while it
        waits for a slot, and the threads always have work while deliveries run."""
        signer = self.signer_for(job)
        threads = self._threads() if signer is not None else None
        if threads is None:
            return
        try:
            url = http11.target(job.inbox).url
        except (ValueError, UnicodeError):  # refused, with the reason, when its turn comes
            return
        scheme = self.scheme_for(job)
        future = threads.sign(signer, "POST", url, {"Content-Type": CONTENT_TYPE}, job.body,
                              scheme)
        self._presigned[job.id] = (url, scheme, future)

    async def _sign(self, job: Job, signer: Signer, url: str, scheme: str) -> dict[str, str]:
        """The job's signed headers: signed as it arrived, if for this URL and scheme, else
        now, in the signing threads (:mod:`.signing_threads`) unless there are none."""
        presigned = self._presigned.pop(job.id, None)
        if presigned is not None:
            if presigned[:2] == (url, scheme):
                return await presigned[2]
            _discard(presigned[2])
        headers = {"Content-Type": CONTENT_TYPE}
        threads = self._threads()
        if threads is None:
            return signer("POST", url, headers, job.body, scheme)
        return await threads.sign(signer, "POST", url, headers, job.body, scheme)

    async def _signed_head(self, job: Job, signer: Signer, url: str, scheme: str
                           ) -> tuple[bytes, str | None]:
        """The header lines of the job's signed POST to ``url``, and the ``Host`` to send:
        the signer's, as it signed the URL as sent (IDN host in ASCII, path
        percent-encoded), or the signature cannot verify."""
        signed = dict(await self._sign(job, signer, http11.target(url).url, scheme))
        host = signed.pop("Host", None)
        return header_lines({"User-Agent": self.config.USER_AGENT, "Accept": ACCEPT,
                             **signed}), host

    async def _post(self, job: Job) -> Outcome:
        """POST the job, following redirects; signed, a 401 is answered at once by the same
        request signed with the other scheme (a double knock, within the same attempt)."""
        url = job.inbox
        cfg = self.config
        signer = self.signer_for(job)
        scheme = self.scheme_for(job)
        knocked = False
        hops = 0
        while True:
            check_url(url)
            check_literal_address(url, cfg.ALLOW_PRIVATE_ADDRESSES)
            head, host = self._head, None
            if signer is not None:
                head, host = await self._signed_head(job, signer, url, scheme)
            resp = await self._client.post(url, head, job.body, host=host)
            status = resp.status
            if status == 401 and signer is not None and not knocked:
                knocked, scheme = True, signing.other(scheme)
                continue
            if status == 303:
                return Outcome(job, State.FAILED, status_code=status, error=SEE_OTHER)
            if status in REDIRECTS:
                hops += 1
                if hops > MAX_REDIRECTS:
                    return Outcome(job, State.FAILED, status_code=status,
                                   error=f"more than {MAX_REDIRECTS} redirects")
                try:
                    target = redirect_target(url, resp.headers.get("location"))
                except ValueError as exc:
                    return Outcome(job, State.FAILED, status_code=status,
                                   error=f"HTTP {status} redirect {exc}")
                if origin(target) != origin(url):
                    logger.info("activity_queue: %s redirects to %s", url, target)
                url = target
                continue
            state = classify_status(status)
            excerpt = resp.body[: cfg.RESPONSE_EXCERPT * 4].decode("utf-8", "replace")
            excerpt = excerpt[: cfg.RESPONSE_EXCERPT]
            error = "" if state is State.SENT else f"HTTP {status}"
            learned = None
            if knocked and status == 401:
                error = (f"HTTP 401: refused both {signing.NAMES[signing.other(scheme)]} and "
                         f"{signing.NAMES[scheme]} signatures")
            elif knocked and state is State.SENT:
                learned = self.hosts.schemes[job.host] = scheme
            return Outcome(job, state, status_code=status, error=error, excerpt=excerpt,
                           retry_after=parse_retry_after(resp.headers.get("retry-after")),
                           host_fault=status in RETRYABLE_STATUSES, signature_scheme=learned)


def _discard(future: asyncio.Future) -> None:
    """A signature no request will use: cancelled, or its error marked as seen."""
    if not future.cancel() and not future.cancelled():
        future.exception()


def signing_threads(config: Config) -> int:
    """``SIGNING_THREADS``, None meaning two per core.

    Two, because a signing thread spends more time waiting for the GIL between two
    signatures (the event loop and the database side hold it in turn) than signing:
    0.25 ms of CPU in about 1 ms per signature, on 2 cores. With two per core, another
    one is ready when the GIL comes free: 2,400 signed deliveries/s against 1,850 with
    one per core there (docs/bench.md).
    """
    if config.SIGNING_THREADS is None:
        return 2 * (os.cpu_count() or 1)
    return config.SIGNING_THREADS


def header_lines(headers: dict[str, str]) -> bytes:
    """``Name: value`` lines, refusing what would split a header (CR, LF, NUL)."""
    out = []
    for name, value in headers.items():
        line = f"{name}: {value}"
        if any(c in line for c in "\r\n\0"):
            raise ValueError(f"header {name!r} contains a line break or NUL")
        out.append(line.encode("latin-1") + b"\r\n")
    return b"".join(out)


def describe(exc: OSError) -> str:
    """An OSError as an operator wants to read it: never empty."""
    return str(exc) or type(exc).__name__
