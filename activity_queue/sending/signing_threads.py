"""Threads that sign requests for the transport's event loop, so that every core signs.

An RSA-2048 signature costs some 0.2–0.3 ms of CPU, more than the rest of a
delivery; ``cryptography`` releases the GIL while it signs, so signatures made in
other threads run on the other cores while the loop goes on sending. Compared
with ``loop.run_in_executor``, a thread takes several requests at once and
finished signatures go back to the loop in batches, one wake-up for all that
finished meanwhile, which keeps the loop's share of each signed delivery small.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

#: Signatures a thread takes from the queue at once, and hands back together: each
#: hand-off between threads costs a wake-up, dear on a busy machine.
BATCH = 8


class SigningThreads:
    """``threads`` threads calling signers for ``loop``; :meth:`sign` is called on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threads: int) -> None:
        self._loop = loop
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._done: list[tuple[asyncio.Future, Any, BaseException | None]] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"activity-queue-sign-{i}",
                                          daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def sign(self, signer: Callable[..., Any], *args: Any) -> asyncio.Future:
        """A future of ``signer(*args)``, computed in one of the threads."""
        future = self._loop.create_future()
        self._requests.put((future, signer, args))
        return future

    def close(self) -> None:
        """The threads end once the signatures asked for so far are made."""
        for _ in self._threads:
            self._requests.put(None)

    def _run(self) -> None:
        while (item := self._requests.get()) is not None:
            batch = [item]
            while len(batch) < BATCH:
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # closing: the sentinel is another thread's to take
                    self._requests.put(None)
                    break
                batch.append(item)
            done = []
            for future, signer, args in batch:
                try:
                    done.append((future, signer(*args), None))
                except BaseException as exc:  # handed to the awaiting delivery
                    done.append((future, None, exc))
            with self._lock:
                first = not self._done
                self._done.extend(done)
            if first:
                try:
                    self._loop.call_soon_threadsafe(self._hand_back)
                except RuntimeError:  # the loop is closed: nobody awaits any more
                    return

    def _hand_back(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        for future, result, error in done:
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
