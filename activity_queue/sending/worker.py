"""The worker: claims due rows, hands them to the transport, writes the outcomes.

Only this thread writes to the database on SQLite (so SQLite sees one writer
from us), in batches; on PostgreSQL outcomes are written
by a second thread (:mod:`activity_queue.sending.writer`) while this one claims. The
transport's event loop only touches the network. The same ``Worker`` runs
in-process (see :mod:`activity_queue.sending.backends.thread`) and in the ``activity_worker``
command.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import InterfaceError, OperationalError, close_old_connections, connections, router
from django.utils import timezone

from .. import signals
from ..conf import Config, get_config
from ..lifecycle import State
from ..models import ScheduledActivity
from ..net import signing
from ..net.signing import Signer
from . import chores, hosts
from . import drops as dropping
from . import queue as store
from .actor_keys import ActorKeys
from .alerts import report_final_failure, report_unavailable
from .hosts import HostBook
from .jobs import Job, Outcome
from .listen import Listener
from .retry import is_final, retry_delay
from .sql import locked
from .transport import TOTAL_TIMEOUTS, Transport
from .writer import BackgroundWriter, Written

logger = logging.getLogger(__name__)
#: Rows of paused hosts moved to the end of their pause before a claim (hosts.defer_paused);
#: a larger backlog is moved over the following claims.
DEFER_PER_CLAIM = 5_000
#: Seconds between passes over every paused host, for rows that came due during a pause.
DEFER_EVERY = 10.0
#: Seconds between checks for a database that stopped answering: recovery starts
#: within this long of its return.
DB_CHECK_INTERVAL = 0.5
#: What a lost or refused database connection raises (also a server shutting down,
#: starting up, or ending the session).
DISCONNECTS = (OperationalError, InterfaceError)
failure_logger = logging.getLogger("activity_queue.failures")


#: The renewal time of a row whose lease another worker took.
LOST = float("-inf")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class Report:
    """What one step did; ``run_once`` returns it, the burst command adds them up."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    deferred: int = 0
    released: int = 0
    dropped: int = 0
    #: Queued rows that ended as failures because their host is unavailable.
    retired: int = 0
    outcomes: list[Outcome] = field(default_factory=list, repr=False)

    def add(self, other: Report) -> None:
        for name in ("claimed", "sent", "retried", "failed", "deferred", "released", "dropped",
                     "retired"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Worker:
    """One worker identity with its own transport and lease holder name."""

    def __init__(self, *, name: str | None = None, config: Config | None = None,
                 signer: Signer | None = None, mode: str = "dedicated") -> None:
        self.config = config or get_config()
        #: How this worker runs, for its log: "dedicated" (activity_worker), "in-process".
        self.mode = mode
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.signer = signer if signer is not None else signing.delivery_signer(self.config)
        #: Each activity's actor's key, when ``ACTOR_KEYS`` names them.
        self.actor_keys = ActorKeys(self.config)
        self.outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.transport: Transport | None = None
        #: What this worker knows of each host's health; shared with its transport.
        self.hosts = HostBook(self.config)
        #: Rows this worker holds, with when their lease was last renewed.
        self._held: dict[int, tuple[Job, float]] = {}
        self._unresolved: list[Outcome] = []
        self._writer: BackgroundWriter | None = None
        self._next_defer = 0.0
        self._next_unavailable = 0.0
        self._next_renewal = 0.0
        #: Probes of unavailable hosts in flight (:meth:`Transport.probe`), per host.
        self._probes: dict[str, concurrent.futures.Future] = {}
        self._writer_failures = 0
        self._claim_from = 0.0
        #: Seconds in-flight deliveries get to finish when stopping.
        self.grace = self.config.TIMEOUT + 1
        #: A request starts only while its row's lease has more than this left: enough
        #: for the whole exchange (TOTAL_TIMEOUTS x TIMEOUT), but never more than a
        #: quarter of LEASE, which renewals keep clear of.
        self.lease_margin = min(TOTAL_TIMEOUTS * self.config.TIMEOUT, self.config.LEASE / 4)

    # -- limits ------------------------------------------------------------

    @property
    def max_held(self) -> int:
        return max(2 * self.config.BATCH_SIZE, 2 * self.config.WORKERS)

    # -- public entry points -------------------------------------------------

    def wake(self) -> None:
        self.wakeup.set()

    def run_once(self, timeout: float | None = None) -> Report:
        """Claim what is due, deliver it, and write every outcome before returning.

        Errors propagate: this is the step tests and ``--burst`` call.
        """
        self._ensure_transport()
        report = Report()
        for chore in chores.registered():
            chore.run()
        self.hosts.refresh_tripped(force=True)
        self._next_unavailable = 0.0
        jobs = self._claim(self.max_held, report)
        self.transport.submit(jobs)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiting = len(jobs)
        collected: list[Outcome] = []
        while waiting:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                collected.append(self.outcomes.get(timeout=remaining))
            except queue.Empty:
                raise TimeoutError(f"{waiting} deliveries still in flight") from None
            waiting -= 1
        self._observe(collected)
        self._resolve(collected, report)
        if self._probes:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            concurrent.futures.wait(list(self._probes.values()), timeout=remaining)
            self._collect_probes()
        return report

    def run_forever(self) -> None:
        """Pipeline claims, deliveries and resolutions until :meth:`stop`."""
        self._ensure_transport()
        self.hosts.pipelined = True
        alias = router.db_for_write(ScheduledActivity)
        if Listener.supported(alias):
            Listener(alias, self.wakeup, self.stopping).start()
        if connections[alias].vendor == "postgresql":
            self._writer = BackgroundWriter(self._write, self.wake)
        logger.info("activity_queue worker %s started: %s, WORKERS=%d, PER_HOST=%d, "
                    "backend %s, database %s", self.id, self.mode, self.config.WORKERS,
                    self.config.PER_HOST, self.config.BACKEND, connections[alias].vendor)
        errors = 0
        try:
            while not self.stopping.is_set():
                try:
                    busy = self._step()
                    errors = 0
                except Exception as exc:
                    errors += 1
                    pause = min(30.0, 0.5 * 2 ** min(errors, 6))
                    if locked(exc):
                        # Others held SQLite's write lock: what this step held is kept and
                        # written at the next one, after a pause that lets them finish.
                        logger.warning("activity_queue worker %s: the database stayed busy for "
                                       "its timeout; trying again in %.1f s", self.id, pause)
                        self.stopping.wait(pause)
                        continue
                    logger.exception("activity_queue worker %s: step failed", self.id)
                    self._close_connection()
                    if self._await_database():
                        errors = 0
                        continue
                    self.stopping.wait(pause)
                    continue
                if not busy:
                    self.wakeup.wait(self._idle_wait())
                    self.wakeup.clear()
        finally:
            self._shutdown()
            logger.info("activity_queue worker %s stopped", self.id)

    def run_until_idle(self, deadline: float | None = None) -> None:
        """Pipeline claims, deliveries and resolutions until nothing is due or in flight.

        What one Celery task runs (:mod:`activity_queue.sending.backends.celery`): like
        :meth:`run_forever` it keeps claiming while slow deliveries are in
        flight (no head-of-line blocking within a batch), but it returns once
        idle instead of waiting for more. From ``deadline`` (``time.monotonic()``)
        on, or once :meth:`stop` is called, it claims nothing new and returns
        when what it holds is written. A database that stops answering is
        waited for until ``deadline``; other errors propagate. The rows this
        worker still holds stay tracked, so the next call picks up where this
        one failed.
        """
        self._ensure_transport()
        self.hosts.pipelined = True
        while True:
            claiming = not self.stopping.is_set() and (deadline is None
                                                       or time.monotonic() < deadline)
            try:
                busy = self._step(claim=claiming)
            except DISCONNECTS:
                logger.warning("activity_queue worker %s: step failed", self.id, exc_info=True)
                if not self._await_database(deadline):
                    raise
                continue
            waiting = time.monotonic() < self._claim_from  # claims resume shortly
            if (not (self._held or self._unresolved or self._probes)
                    and (not claiming or not (busy or waiting))):
                return
            if not busy:
                self.wakeup.wait(self._idle_wait())
                self.wakeup.clear()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    # -- the loop ------------------------------------------------------------

    def _step(self, claim: bool = True) -> bool:
        close_old_connections_if_idle = not self._held
        if close_old_connections_if_idle:
            connections[router.db_for_write(ScheduledActivity)].close_if_unusable_or_obsolete()
        report = Report()
        if self._writer is not None:
            self._collect(self._writer.result(), report)
        if self._probes:
            self._collect_probes()
        fresh = self._drain()
        self._observe(fresh)
        outcomes = self._unresolved + fresh
        self._unresolved = []
        handled = False
        if outcomes and self._writer is not None:
            if self._writer.busy:  # written with the next batch; the writer wakes us
                self._unresolved = outcomes
            else:
                self._writer.submit([self._finalise(o, timezone.now()) for o in outcomes])
                handled = True
        elif outcomes:
            try:
                self._resolve(outcomes, report)
            except Exception:
                self._unresolved = outcomes
                raise
            handled = True
        self._renew_leases()
        for chore in chores.registered():
            chore.poll()
        room = self.max_held - len(self._held) + self._stalled()
        jobs: list[Job] = []
        if claim and time.monotonic() >= self._claim_from and (
                room >= min(self.config.BATCH_SIZE, self.max_held // 2) or not self._held):
            jobs = self._claim(min(room, self.config.BATCH_SIZE), report)
            self.transport.submit(jobs)
        return bool(handled or jobs)

    def _collect(self, done: Written | None, report: Report) -> None:
        """Account for a batch the background writer finished.

        A batch that failed is written again with the next one. A lost connection is
        news only if the database still does not answer: the writer may have met it
        during an outage this worker has already waited out, and raising it then would
        count one outage twice.
        """
        if done is None:
            return
        if done.error is not None:
            self._unresolved = done.outcomes + self._unresolved
            self._writer_failures += 1
            if (isinstance(done.error, DISCONNECTS) and self._writer_failures == 1
                    and self._database_answers()):
                logger.warning("activity_queue worker %s: writing %d outcomes again after "
                               "the writer lost its connection (%s)", self.id,
                               len(done.outcomes), first_line(done.error))
                return
            raise done.error
        self._writer_failures = 0
        self._written(done.outcomes, done.written, done.opened, done.retired, report)

    # -- a database that does not answer -----------------------------------------

    def _database_answers(self) -> bool:
        """One ``SELECT 1``, on a new connection if the current one is broken."""
        connection = connections[router.db_for_write(ScheduledActivity)]
        for _ in range(2):
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                return True
            except Exception:
                self._close_connection()
        return False

    def _await_database(self, deadline: float | None = None) -> bool:
        """After a failed step: wait for the database if it does not answer.

        Returns False at once if it answers (the failure was something else), else
        checks every ``DB_CHECK_INTERVAL`` seconds and returns True once it answers
        again, False if stopped or past ``deadline`` first. Meanwhile the transport
        goes on delivering what this worker holds while the leases allow
        (:meth:`_may_start`); the outcomes wait here and are written on its return.
        """
        if self._database_answers():
            return False
        started = time.monotonic()
        logger.warning("activity_queue worker %s: the database does not answer; checking "
                       "every %.1f s, holding %d rows", self.id, DB_CHECK_INTERVAL,
                       len(self._held))
        while not self.stopping.wait(DB_CHECK_INTERVAL):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self._database_answers():
                self._next_renewal = 0.0  # renew at once what the outage left near its end
                self._writer_failures = 0
                # Every worker first writes and renews what it held through the outage; a
                # claim right away could take another's rows whose lease ran out meanwhile.
                self._claim_from = time.monotonic() + 2 * DB_CHECK_INTERVAL
                logger.warning("activity_queue worker %s: the database answers again after "
                               "%.1f s", self.id, time.monotonic() - started)
                return True
        return False

    def _may_start(self, job: Job) -> bool:
        """Whether the transport may send ``job`` now (asked from the loop's thread).

        Not when its lease has less than ``lease_margin`` seconds left: renewals keep a
        healthy worker's leases well above it, so only a worker that could not reach
        the database stops sending, before another worker may take the row and send it
        too. Nor when a renewal found the row taken.
        """
        held = self._held.get(job.id)
        if held is None:
            return True
        return held[1] + self.config.LEASE - time.monotonic() > self.lease_margin

    def _idle_wait(self) -> float:
        now = time.monotonic()
        wait = self.config.POLL_INTERVAL
        if self._held:
            # Wake in time to renew the leases of rows still in flight (LEASE may be short).
            wait = min(1.0, self._next_renewal - now)
        if self._claim_from > now:
            wait = min(wait, self._claim_from - now)
        return max(0.01, wait)

    def _drain(self) -> list[Outcome]:
        out: list[Outcome] = []
        get = self.outcomes.get_nowait
        try:
            while True:
                out.append(get())
        except queue.Empty:
            return out

    # -- claiming --------------------------------------------------------------

    def _ensure_transport(self) -> None:
        if self.transport is None:
            self.transport = Transport(self.config, self._on_outcome, self.hosts,
                                       signer=self.signer, may_start=self._may_start)
            self.transport.start()

    def _on_outcome(self, outcome: Outcome) -> None:
        self.outcomes.put(outcome)
        self.wakeup.set()

    def _claim(self, limit: int, report: Report) -> list[Job]:
        if limit <= 0 or self.stopping.is_set():
            return []
        cfg = self.config
        now = time.monotonic()
        self.hosts.refresh_tripped()
        self._defer_paused(now)
        self._tend_unavailable(now, report)
        full, room, probation = self.hosts.claim_limits()
        # Rows in the writer's hands may already be back in the queue, due; they are
        # still held here until the writer reports, so they are not claimed twice.
        jobs = store.claim(self.id, limit, cfg.LEASE, per_host=self.hosts.backlog, room=room,
                           probation=probation, exclude_hosts=full,
                           exclude_ids=self._writer.ids if self._writer else ())
        if not jobs:
            return []
        exhausted = [job for job in jobs if job.attempts > cfg.MAX_ATTEMPTS]
        if exhausted:
            jobs = [job for job in jobs if job.attempts <= cfg.MAX_ATTEMPTS]
            self._give_up(exhausted, report)
        jobs, dropped, waiting = dropping.on_claim(self.id, jobs,
                                                   router.db_for_write(ScheduledActivity))
        report.dropped += dropped
        report.released += waiting
        if not jobs:
            return []
        keep: list[Job] = []
        surplus: list[int] = []
        for job in jobs:
            if self.hosts.admit(job):
                self._held[job.id] = (job, now)
                keep.append(job)
            else:
                surplus.append(job.id)
        if surplus:
            store.release(self.id, surplus)
        self.hosts.resume({job.host for job in keep})
        self.actor_keys.assign(keep)
        report.claimed += len(keep)
        report.released += len(surplus)
        return keep

    def _give_up(self, jobs: list[Job], report: Report) -> None:
        """End rows whose last allowed attempt left no outcome as failed, unsent.

        Their worker stopped mid-delivery (killed, out of memory, a native crash),
        so their lease ran out. Sending them again would exceed ``MAX_ATTEMPTS``,
        and a delivery that kills its worker every time would be retried forever.
        """
        store.release_attempts(self.id, [job.id for job in jobs])
        limit = self.config.MAX_ATTEMPTS
        outcomes = []
        for job in jobs:
            job.attempts -= 1  # what was made before this claim
            if job.attempts == limit:
                error = (f"gave up after {limit} attempts: the last one ended without an "
                         "outcome (its worker stopped while delivering it, and the lease "
                         "expired)")
            else:  # MAX_ATTEMPTS was lowered since
                error = f"gave up after {job.attempts} attempts (MAX_ATTEMPTS is {limit})"
            outcomes.append(Outcome(job, State.FAILED, error=error))
        self._written(outcomes, *self._write(outcomes), report)

    def _defer_paused(self, now: float) -> None:
        """Move paused hosts' due rows out of the claims' way (hosts.defer_paused): those
        of hosts whose circuit just opened at once, the others' every DEFER_EVERY seconds,
        DEFER_PER_CLAIM rows per claim until none is left."""
        book = self.hosts
        if book.just_paused:
            paused, book.just_paused = book.just_paused, set()
            if hosts.defer_paused(paused, limit=DEFER_PER_CLAIM) == DEFER_PER_CLAIM:
                self._next_defer = 0.0
        if book.tripped and now >= self._next_defer:
            full = hosts.defer_paused(limit=DEFER_PER_CLAIM) == DEFER_PER_CLAIM
            self._next_defer = 0.0 if full else now + DEFER_EVERY

    def _tend_unavailable(self, now: float, report: Report) -> None:
        """Every DEFER_EVERY seconds while some host is unavailable: end its rows that came
        in since (written by a process that did not know yet, or handed back by a worker),
        and probe the hosts whose probe is due."""
        if not self.hosts.unavailable or now < self._next_unavailable:
            return
        self._next_unavailable = now + DEFER_EVERY
        retired = hosts.retire(hosts.retiring(), limit=DEFER_PER_CLAIM)
        report.retired += sum(r.failed for r in retired)
        if any(r.failed == DEFER_PER_CLAIM for r in retired):
            self._next_unavailable = 0.0
        if self.transport is None or self.stopping.is_set():
            return
        for host in hosts.take_probes():
            if host not in self._probes:
                self._probes[host] = self.transport.probe(host)

    def _collect_probes(self) -> None:
        """A probe answered: the host is available again (its circuit closes); else it is
        probed again in PROBE_EVERY seconds."""
        for host, future in list(self._probes.items()):
            if not future.done():
                continue
            del self._probes[host]
            try:
                error = future.result()
            except Exception as exc:  # the loop stopped under it
                error = f"{type(exc).__name__}: {exc}"
            if error is None:
                logger.warning("activity_queue: %s answered a probe; delivering to it again",
                               host)
                hosts.close_circuits([host], keep_stopped=True)
                self.hosts.unavailable.discard(host)
                self.hosts.resume([host])
            else:
                hosts.probe_failed(host, error)

    def _stalled(self) -> int:
        """Rows held for hosts that do not answer, up to a quarter of ``max_held``."""
        return self.hosts.stalled(self.max_held // 4)

    def _observe(self, outcomes: list[Outcome]) -> None:
        stopped = self.hosts.observe(outcomes)
        if stopped and self.transport is not None:
            self.transport.trim(stopped)

    def _renew_leases(self) -> None:
        now = time.monotonic()
        if now < self._next_renewal:
            return
        lease = self.config.LEASE
        stale = [job_id for job_id, (_, since) in self._held.items() if now - since > lease / 3]
        if stale:
            renewed = store.renew(self.id, stale, lease)
            lost = 0
            for job_id in stale:
                held = self._held.get(job_id)
                if held is None:
                    continue
                if job_id in renewed:
                    self._held[job_id] = (held[0], now)
                elif held[1] != LOST:
                    # Another worker took it after the lease ran out: not sent from here,
                    # and its outcome, if any, is not written (resolve checks leased_by).
                    self._held[job_id] = (held[0], LOST)
                    lost += 1
            if lost:
                logger.warning("activity_queue worker %s: %d rows were taken by another "
                               "worker after their lease ran out", self.id, lost)
        self._next_renewal = now + lease / 6

    # -- resolving ---------------------------------------------------------------

    def _finalise(self, outcome: Outcome, now) -> Outcome:
        """Turn a transport outcome into what is written: retry time, or give up."""
        cfg = self.config
        made = outcome.job.attempts
        if outcome.state is State.RETRYING:
            if is_final(outcome.state, made, cfg.MAX_ATTEMPTS):
                outcome.state = State.FAILED
                outcome.error = f"gave up after {made} attempts: {outcome.error}"
            else:
                delay = retry_delay(made, factor=cfg.BACKOFF_FACTOR, cap=cfg.BACKOFF_MAX,
                                    retry_after=outcome.retry_after,
                                    retry_after_cap=cfg.RETRY_AFTER_MAX)
                outcome.retry_at = now + timedelta(seconds=delay)
        return outcome

    def _resolve(self, outcomes: list[Outcome], report: Report) -> None:
        now = timezone.now()
        outcomes = [self._finalise(o, now) for o in outcomes]
        self._written(outcomes, *self._write(outcomes), report)

    def _write(self, outcomes: list[Outcome]
               ) -> tuple[list[Outcome], list[str], list[hosts.Retired]]:
        """Write the outcomes; the queued rows of hosts that became unavailable then end
        (those this worker held are among them: they were just written back)."""
        cfg = self.config
        written, opened, unavailable = store.resolve(
            self.id, outcomes, circuit_threshold=cfg.CIRCUIT_THRESHOLD,
            circuit_cooldown=cfg.CIRCUIT_COOLDOWN, cooldown_max=cfg.BACKOFF_MAX,
            defer_for=max(cfg.TIMEOUT, cfg.CIRCUIT_COOLDOWN), probes=cfg.PER_HOST,
            unavailable_after=cfg.UNAVAILABLE_AFTER,
        )
        retired = hosts.retire(unavailable, limit=DEFER_PER_CLAIM) if unavailable else []
        return written, opened, retired

    def _written(self, outcomes: list[Outcome], written: list[Outcome], opened: list[str],
                 retired: list[hosts.Retired], report: Report) -> None:
        """Bookkeeping, circuits, signals and alerts once outcomes are in the database."""
        for o in outcomes:
            self._forget(o.job)
        recovered = self.hosts.written(written, opened)
        if recovered:
            # At the pause's level, so that whoever sees a pause also sees it end.
            logger.warning("activity_queue: %s answered again after a pause; circuit closed, "
                           "deliveries resumed", ", ".join(sorted(recovered)))
        if opened:
            logger.warning("activity_queue: pausing deliveries to %s", ", ".join(opened))
            self.transport.pause(opened)
        if retired:
            self._retired(retired, report)
        for o in written:
            if o.state is State.SENT:
                report.sent += 1
                signals.activity_delivered.send(sender=Worker, outcome=o)
            elif o.state is State.FAILED:
                report.failed += 1
                self._report_failure(o)
            elif o.state is State.RETRYING:
                report.retried += 1
            else:
                report.deferred += 1
        report.outcomes.extend(written)
        if written:
            signals.outcomes_written.send(sender=Worker, outcomes=written)

    def _retired(self, retired: list[hosts.Retired], report: Report) -> None:
        """Hosts that just became unavailable: one alert and one signal each."""
        names = {r.host for r in retired}
        self.hosts.unavailable |= names
        self.hosts.paused |= names
        self.transport.pause(names)
        self._next_unavailable = 0.0  # rows handed back by the transport end soon
        for r in retired:
            report.retired += r.failed
            failure_logger.error(
                "activity_queue: %s is unavailable (failing since %s): deliveries to it "
                "stopped; %s queued deliveries failed", r.host, r.failing_since, r.failed,
                extra={"inbox_host": r.host})
            report_unavailable(r.host, r.failing_since, r.failed)
            signals.host_unavailable.send(sender=Worker, host=r.host,
                                          failing_since=r.failing_since, failed=r.failed)

    def _forget(self, job: Job) -> None:
        if self._held.pop(job.id, None) is not None:
            self.hosts.release(job)

    def _report_failure(self, outcome: Outcome) -> None:
        job = outcome.job
        failure_logger.error(
            "activity_queue: %s %s to %s failed finally after %s attempt(s): %s",
            job.activity_type, job.activity_id, job.inbox, job.attempts, outcome.error,
            extra={"inbox_host": job.host, "status_code": outcome.status_code},
        )
        report_final_failure(outcome)
        signals.activity_failed.send(sender=Worker, outcome=outcome)

    # -- shutdown ------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Finish or hand back what is in flight; nothing is left leased to a dead name."""
        if self.transport is not None:
            try:
                self.transport.stop(grace=self.grace)
            except Exception:
                logger.exception("activity_queue: transport did not stop cleanly")
            self.transport = None
        self._probes.clear()
        try:
            self._stop_writer()
        except Exception:
            logger.exception("activity_queue: the background writer failed")
        outcomes = self._unresolved + self._drain()
        self._unresolved = []
        try:
            if outcomes:
                self._resolve(outcomes, Report())
            if self._held:
                store.release(self.id, list(self._held))
                self._held.clear()
                self.hosts.held.clear()
        except Exception:
            logger.exception("activity_queue: could not write back in-flight rows; "
                             "their leases will expire")
        finally:
            self._close_connection()

    def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        done = writer.result(timeout=60) if writer.busy else None
        writer.stop()
        self._collect(done, Report())

    def _close_connection(self) -> None:
        try:
            connections[router.db_for_write(ScheduledActivity)].close()
        except Exception:
            logger.debug("closing the connection failed", exc_info=True)
        close_old_connections()
