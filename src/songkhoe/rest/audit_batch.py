"""AuditEvents of concurrent requests written together, from the event loop.

Every request waits for its AuditEvent to be committed before its answer leaves (issue 5).
Handing each one to a worker thread cost a thread hop per request; instead the requests of
one event loop queue their events, and one task at a time writes everything queued in one
``AuditLog.record_many`` call (one transaction per batch). ``inline``: on the event loop
itself — for the embedded SQLite store, whose batch append (~60 µs an entry) costs less than
handing it to a thread; PostgreSQL's network round trips and WAL flush go to a thread. A
failed write fails every request of its batch.
"""

from __future__ import annotations

import asyncio

from starlette.concurrency import run_in_threadpool

from songkhoe.auth.audit import AuditLog, Event


class AuditBatcher:
    def __init__(self, log: AuditLog, *, inline: bool = False) -> None:
        self.log = log
        self.inline = inline
        self._queue: list[tuple[Event, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, event: Event) -> int:
        """Queue ``event``; its sequence number once it is committed."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((event, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await done

    async def _write(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                events = [e for e, _ in batch]
                seqs = self.log.record_many(events) if self.inline else \
                    await run_in_threadpool(self.log.record_many, events)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for (_, done), seq in zip(batch, seqs):
                    if not done.done():
                        done.set_result(seq)
