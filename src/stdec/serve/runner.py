"""The engine's thread: the one thread that owns the Engine and drives `engine.step()`.

Requests reach it through an inbox; each job's updates go back to the request's event loop
through a Bridge. A failure of the step itself (not of one row) ends every job with it. Its
first job is a short warm-up decode; the server is ready once that has finished.
"""

import asyncio
import threading
import time
from collections.abc import Callable

from stdec.decoding.engine import Engine
from stdec.decoding.engine import Request as Job

__all__ = ["SHUTDOWN", "Bridge", "Runner"]

SHUTDOWN = "the server is shutting down; the request was cancelled before it finished"


class Runner:
    """The engine's thread: takes new requests from an inbox, steps while there is work."""

    def __init__(self, engine: Engine,
                 on_step: Callable[[float, dict, dict], None] | None = None):
        """`on_step(seconds, counters before, counters after)` follows every engine step."""
        self.engine, self.on_step = engine, on_step
        self.inbox: list[Job] = []  # submitted, not yet handed to the engine
        self.live: set[Job] = set()  # submitted requests (the event loop's own view)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.ready = threading.Event()  # the warm-up decode finished
        self.warm_up_error: str | None = None
        self.draining = False  # a shutdown began: no new requests
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="stdec-engine", daemon=True)

    def start(self, warm_up: tuple[list[int], object] | None = None):
        """Start the engine's thread; `warm_up` (prompt ids, DecodeConfig) is decoded first,
        and `ready` is set when it is done (at once without one)."""
        if warm_up is None:
            self.ready.set()
        else:
            self._put(Job(list(warm_up[0]), warm_up[1], self._warmed_up))
        self.thread.start()

    def _warmed_up(self, job: Job):
        if job.state == "done":
            self.ready.set()
        else:
            self.warm_up_error = job.error or job.state

    @property
    def load(self) -> int:
        """Requests submitted that have neither ended nor been cancelled: decoding or waiting
        (what admission counts; read and written on the event loop only)."""
        self.live = {j for j in self.live if not (j.finished or j.cancelled)}
        return len(self.live)

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
        """Queue a request (on the event loop)."""
        self.live.add(job)
        self._put(job)

    def _put(self, job: Job):
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
            before, start = dict(self.engine.counters), time.perf_counter()
            try:
                stepped = self.engine.step()
            except Exception as err:  # not a row's fault (those fail alone): end them all
                self.engine.cancel_all(f"the engine failed ({type(err).__name__}: {err})")
                continue
            if stepped and self.on_step is not None:
                self.on_step(time.perf_counter() - start, before, self.engine.counters)

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
        update = (job.state, job.committed, job.tokens, job.steps, job.confidence)
        self.loop.call_soon_threadsafe(self.updates.put_nowait, update)
