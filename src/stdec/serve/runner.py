"""The engine's thread: the one thread that owns the Engine and drives `engine.step()`.

Requests reach it through an inbox; each job's updates go back to the request's event loop
through a Bridge. A failure of the step itself (not of one row) ends every job with it.
"""

import asyncio
import threading

from stdec.decoding.engine import Engine
from stdec.decoding.engine import Request as Job

__all__ = ["SHUTDOWN", "Bridge", "Runner"]

SHUTDOWN = "the server is shutting down; the request was cancelled before it finished"


class Runner:
    """The engine's thread: takes new requests from an inbox, steps while there is work."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.inbox: list[Job] = []  # submitted, not yet handed to the engine
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.draining = False  # a shutdown began: no new requests
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="stdec-engine", daemon=True)

    def start(self):
        self.thread.start()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot (cancelled ones no longer count)."""
        while True:
            try:  # the engine's thread may change its deque meanwhile: then read again
                with self.lock:
                    waiting = [*self.inbox, *self.engine.waiting]
                return sum(not j.cancelled for j in waiting)
            except RuntimeError:
                continue

    def submit(self, job: Job):
        with self.lock:
            self.inbox.append(job)
        self.wake.set()

    def _take(self):
        with self.lock:
            for job in self.inbox:
                self.engine.add(job)
            self.inbox.clear()

    def _loop(self):
        while not self.stopping:
            self._take()
            if not self.engine.has_work:
                self.wake.wait(0.05)
                self.wake.clear()
                continue
            try:
                self.engine.step()
            except Exception as err:  # not a row's fault (those fail alone): end them all
                self.engine.cancel_all(f"the engine failed ({type(err).__name__}: {err})")

    @property
    def busy(self) -> bool:
        return bool(self.inbox) or self.engine.has_work

    def stop(self, reason: str = SHUTDOWN):
        """Stop stepping and end what is left with `reason` (idempotent)."""
        self.draining = True
        if self.stopping:
            return
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout=30)
        self._take()
        self.engine.cancel_all(reason)


class Bridge:
    """A job's listener: hands each update from the engine's thread to the request's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.updates = loop, asyncio.Queue()

    def __call__(self, job: Job):
        update = (job.state, job.committed, job.tokens, job.steps)
        self.loop.call_soon_threadsafe(self.updates.put_nowait, update)
