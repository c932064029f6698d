"""AuditEvents of an event loop's requests, committed in batches by one writer task.

Two kinds of requests (issue 5; docs/security.md "Audit"):

- answered first (``queue``): reads, searches, history and other requests that change
  nothing and succeeded. The AuditEvent is queued in the log (``AuditLog.submit``) and the
  answer leaves at once. The first entry queued while the writer is idle starts it
  ``WINDOW`` seconds later, so that one transaction commits every entry of that moment; a
  batch queued while the previous one was being written follows it at once.
- answered once audited (``record``): writes, refusals and failures, sign-ins — and every
  request while the log is failing or while ``limit`` entries are queued (backpressure).
  Their entry is committed, with whatever was queued before it, before the answer starts.

Batches are written in a worker thread: the event loop never waits for the database's
write lock (SQLite's is shared by every worker process) or a commit, and one thread hop per
batch costs little once a batch holds many entries. A failed batch fails the requests
waiting for it; its answered entries stay queued (``AuditLog`` puts them back) and are
retried with the next batch, or after ``RETRY_FIRST``… ``RETRY_MAX`` seconds when nothing
else comes. ``drain`` commits everything queued (the app's lifespan calls it at shutdown).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from songkhoe.auth.audit import AuditLog, Event, Pending

QUEUE_LIMIT = 2048  # answered-first entries queued at most; beyond, requests wait for theirs
#: Seconds an answered-first entry may wait for others to share its commit. A batch has a
#: fixed cost (BEGIN, the chain's head, COMMIT, a thread hop) shared by its entries; at 500
#: reads/s per server process a 10 ms window held 5 entries, a 50 ms window 25
#: (``bench/bench_audit.py --batch``; docs/performance.md "Security"). The price is the crash
#: window (docs/security.md "What a crash can lose").
WINDOW = 0.05
RETRY_FIRST = 0.1  # seconds before a failed batch of answered requests is retried …
RETRY_MAX = 10.0  # … doubling up to this

_log = logging.getLogger("songkhoe.audit")


class AuditBatcher:
    def __init__(self, log: AuditLog, *, limit: int = QUEUE_LIMIT,
                 window: float = WINDOW) -> None:
        self.log = log
        self.limit = limit
        self.window = window
        self._waiters: list[tuple[Pending, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._retry = RETRY_FIRST

    def accepting(self) -> bool:
        """Whether a request may be answered before its entry is committed: the last batch
        was written and fewer than ``limit`` entries are queued."""
        return self.log.failing is None and self.log.pending() < self.limit

    def queue(self, event: Event) -> None:
        """Queue ``event`` and return at once; the writer commits it with the next batch,
        within ``window`` seconds (at once when ``window`` is 0)."""
        self.log.submit(event)
        if not self.window:
            self._start()
            return
        loop = asyncio.get_running_loop()
        if (self._timer is None or self._timer_loop is not loop) and \
                (self._writer is None or self._writer.done()):  # (a loop that ended: anew)
            self._timer, self._timer_loop = loop.call_later(self.window, self._start), loop

    async def record(self, event: Event) -> int:
        """Queue ``event``; its sequence number once it is committed (the write's error if
        its batch fails)."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append((self.log.submit(event, waited=True), done))
        self._start()
        return await done

    async def drain(self) -> None:
        """Commit every entry queued so far (raises if that fails)."""
        await run_in_threadpool(self.log.flush)

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._waiters or self.log.pending():
            waiters, self._waiters = self._waiters, []
            try:
                await self.drain()
            except Exception:  # noqa: BLE001 - the waiters hear of it below, the log logged it
                failed = True
            else:
                failed = False
                self._retry = RETRY_FIRST
            for pending, done in waiters:
                if done.done():  # the request went away
                    continue
                if pending.seq is not None:
                    done.set_result(pending.seq)
                elif pending.error is not None:
                    done.set_exception(pending.error)
                else:  # queued behind a failed batch: in the next one
                    self._waiters.append((pending, done))
            if failed and not self._waiters:  # only answered requests' entries: retry later
                _log.warning("audit log: retrying %d entries in %.1f s", self.log.pending(),
                             self._retry)
                await asyncio.sleep(self._retry)
                self._retry = min(self._retry * 2, RETRY_MAX)
