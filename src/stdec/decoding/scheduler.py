"""The scheduler: the queue, the slots, admission, reaping, and each row's block.

The engine holds `max_batch` slots. A request owns one slot from admission to its last
commit, with its own prompt length, gen_length, block position, DecodeConfig, sampling
generator, stats and trace. Every slot's sequence starts at column 0 of its row of
`Sequences.x` (positions = columns). Each step the scheduler drops cancelled or timed-out
requests, admits waiting ones into free slots and sorts the rows by the kind of forward they
take: rows at a block start (and rows without a cache) a full forward, which refreshes their
K/V; the others one block step of their cache mode. After the commit it reads, in one host
sync, each row's first masked position: that gives its block, its committed prefix (what is
streamed) and whether it is finished; a finished row frees its slot at once.

Images (vision-language models): a request's prompt holds one placeholder id per image and
the request carries the images; at admission the runner expands them (runner.py).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from stdec.decoding import registry
from stdec.decoding.config import DecodeConfig
from stdec.decoding.graphs import on_device
from stdec.decoding.runner import KINDS

if TYPE_CHECKING:
    from stdec.decoding.commit import CommitStep
    from stdec.decoding.runner import ModelRunner

__all__ = ["Request", "RowStats", "Scheduler", "Sequences", "Trace"]


@dataclass
class RowStats:
    nfe: int  # forward passes this row took part in
    gen_tokens: int  # generated tokens before the first EOS
    tpf: float  # gen_tokens / nfe
    wall_time: float  # seconds from the start of the row's decode (admission) until it finished
    tokens_per_s: float  # gen_tokens / wall_time


@dataclass
class Trace:
    step: Tensor  # (B, G) int: the row's step (its NFE count, from 1) that committed each position
    confidence: Tensor  # (B, G) float: confidence at commit; NaN where EOS stop filled it


_ids = itertools.count()


@dataclass(eq=False)
class Request:
    """One prompt to decode, and everything the engine knows about it.

    `listener`, when set, is called (on the engine's thread) once when the request ends,
    and with `progress` also after every step it takes part in (what streaming reads):
    `tokens`/`steps`/`confidence` are then the generated region so far (ids, the mask id where
    still masked; commit step, -1 where not committed; the confidence at the commit, NaN
    where not committed) and `committed` its decoded prefix.
    """

    prompt: list[int]
    config: DecodeConfig
    listener: Callable[[Request], None] | None = None
    deadline: float | None = None  # time.monotonic() after which the request fails
    progress: bool = False
    images: list | None = None  # PIL images, one per placeholder in `prompt` (vision models)
    id: int = field(default_factory=lambda: next(_ids))
    state: str = "waiting"  # waiting, running, done, failed, cancelled
    error: str | None = None
    ids: list[int] | None = None  # generated ids, once done
    stats: RowStats | None = None
    trace: Trace | None = None  # (1, G) tensors when config.trace
    tokens: list[int] = field(default_factory=list)  # live view for listeners
    steps: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)  # at each commit (NaN: not yet)
    committed: int = 0  # length of the committed prefix (up to the first masked position)
    # the engine's bookkeeping
    slot: int | None = None
    block: int = 0  # start of the active block (absolute position)
    step: int = 0  # steps taken in the active block
    nfe: int = 0
    cancelled: bool = False
    t_admit: float = 0.0  # time.perf_counter() at admission into a slot
    t_first: float = 0.0  # ... when its committed prefix first grew (time to first token)
    generator: torch.Generator | None = None
    features: Tensor | None = None  # the prompt's image vectors, once expanded

    @property
    def length(self) -> int:
        return len(self.prompt) + self.config.gen_length

    @property
    def block_width(self) -> int:
        """Positions of the active block: block_length, or fewer in a shorter last block."""
        return min(self.config.block_length, self.length - self.block)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def cancel(self):
        """Ask the engine to drop this request (thread-safe): its slot frees at the next step."""
        self.cancelled = True


class Sequences:
    """Every slot's row on the device: its ids by absolute position (prompt | generated, the
    mask id where not decoded) and, by generated offset, the step (NFE) that committed each
    position (-1: not yet) and its confidence then."""

    def __init__(self, max_batch: int, max_length: int, mask_id: int, device: torch.device):
        S, W = max_batch, max_length
        self.x = torch.full((S, W), mask_id, dtype=torch.long, device=device)
        self.trace_step = torch.full((S, W), -1, dtype=torch.long, device=device)
        self.trace_conf = torch.full((S, W), math.nan, device=device)


class Scheduler:
    """The queue and the slots. Admission readies a slot through the runner (its cache, the
    prompt's images) and the commit step (its rules' state from zero)."""

    def __init__(self, seqs: Sequences, runner: ModelRunner, commit: CommitStep, *,
                 max_batch: int, max_length: int, mask_id: int, eos_ids: set[int]):
        self.seqs, self.runner, self.commit = seqs, runner, commit
        self.max_batch, self.max_length = max_batch, max_length
        self.mask_id, self.eos_ids = mask_id, eos_ids
        self.device = runner.device
        self.slots: list[Request | None] = [None] * max_batch
        self.waiting: deque[Request] = deque()
        # forwards: model forward calls (a batched one counts once); rerun_alone: rows run
        # again one by one after their batched forward failed
        self.counters = {"nfe": 0, "gen_tokens": 0, "steps": 0, "forwards": 0, "rerun_alone": 0}

    # ---- the queue ----

    def add(self, request: Request) -> Request:
        self.waiting.append(request)
        return request

    @property
    def active(self) -> int:
        return sum(r is not None for r in self.slots)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting) or self.active > 0

    def cancel_all(self, reason: str):
        while self.waiting:
            self.end(self.waiting.popleft(), "cancelled", reason)
        for r in self.slots:
            if r is not None:
                self.end(r, "cancelled", reason)

    # ---- each step ----

    def schedule(self) -> dict[str, list[Request]]:
        """Reap, admit, and the active rows by the kind of forward they take this step (in
        runner.KINDS order; empty when no slot is active)."""
        self.reap()
        self.admit()
        rows = [r for r in self.slots if r is not None]
        if rows and self.counters["steps"] == 0:  # pragma: no mutate (a CUDA sync)
            _sync(self.device)
        groups: dict[str, list[Request]] = {kind: [] for kind in KINDS}
        for r in rows:
            cached = r.config.cache != "none" and self.runner.cache is not None
            # dkv also refreshes every dkv_interval steps of a block
            refresh = r.step == 0 or (r.config.cache == "dkv"
                                      and r.step % r.config.dkv_interval == 0)
            groups["full" if not cached or refresh else r.config.cache].append(r)
        return {kind: members for kind, members in groups.items() if members}

    def reap(self):
        now = time.monotonic()
        for r in list(self.waiting):
            if r.cancelled or (r.deadline is not None and now > r.deadline):
                self.waiting.remove(r)
                self._drop(r)
        for r in self.slots:
            if r is not None and (r.cancelled or (r.deadline is not None and now > r.deadline)):
                self._drop(r)

    def _drop(self, r: Request):
        if r.cancelled:
            self.end(r, "cancelled", "the request was cancelled")
        else:
            self.end(r, "failed", "the request timed out before it finished")

    def admit(self):
        for slot in range(self.max_batch):
            if self.slots[slot] is not None:
                continue
            while self.waiting:
                r = self.waiting.popleft()
                if r.images and not self._expand(r):
                    continue
                if r.length > self.max_length:
                    self.end(r, "failed", f"prompt ({len(r.prompt)} tokens) + gen_length "
                             f"({r.config.gen_length}) exceeds the engine's max length "
                             f"{self.max_length}")
                    continue
                self._place(r, slot)
                break

    def _expand(self, r: Request) -> bool:
        try:
            self.runner.expand(r)
        except Exception as err:
            self.end(r, "failed", describe(err))
            return False
        return True

    def _place(self, r: Request, slot: int):
        cfg, P, T = r.config, len(r.prompt), r.length
        self.runner.place(r, slot)
        seqs = self.seqs
        seqs.x[slot, :P] = on_device(r.prompt, self.device)
        seqs.x[slot, P:T] = self.mask_id
        self.commit.reset(slot)
        seqs.trace_step[slot] = -1
        seqs.trace_conf[slot] = math.nan
        r.slot, r.state, r.block, r.step, r.nfe = slot, "running", P, 0, 0
        r.t_admit = time.perf_counter()
        if cfg.temperature > 0:
            r.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.slots[slot] = r

    def advance(self):
        """After the commit, one host sync: each running row's first masked position gives its
        block, its committed prefix and whether it is done."""
        rows = [r for r in self.slots if r is not None]
        if rows:
            self._advance(rows)
        self.counters["steps"] += 1

    def _advance(self, rows: list[Request]):
        dev, W = self.device, self.max_length
        x = self.seqs.x
        slot_t = on_device([r.slot for r in rows], dev)
        pos = torch.arange(W, device=dev)
        lo = on_device([len(r.prompt) for r in rows], dev)[:, None]
        hi = on_device([r.length for r in rows], dev)[:, None]
        open_ = (x[slot_t] == self.mask_id) & (pos >= lo) & (pos < hi)
        first = torch.where(open_, pos, W).min(dim=1).values
        listening = [i for i, r in enumerate(rows) if r.progress and r.listener is not None]
        if listening:
            li = slot_t[listening]
            first, view_x, view_s, view_c = _host(first, x[li], self.seqs.trace_step[li],
                                                  self.seqs.trace_conf[li])
        else:
            first, view_x, view_s, view_c = first.tolist(), [], [], []
        self.counters["nfe"] += len(rows)
        reset, now = [], time.perf_counter()
        for i, (r, f) in enumerate(zip(rows, first, strict=True)):
            P, T = len(r.prompt), r.length
            r.committed = min(f, T) - P
            if registry.get(r.config.policy).remasks and f < T:  # the block may still change
                r.committed = (f - P) // r.config.block_length * r.config.block_length
            if r.committed > 0 and not r.t_first:
                r.t_first = now
            if i in listening:
                j = listening.index(i)
                r.tokens, r.steps = view_x[j][P:T], view_s[j][: T - P]
                r.confidence = view_c[j][: T - P]
            if f >= T:
                self.end(r, "done")
                continue
            block = P + (f - P) // r.config.block_length * r.config.block_length
            if block != r.block:
                r.block, r.step = block, 0
                reset.append(r.slot)
            else:
                r.step += 1
            if i in listening:
                _notify(r)
        if reset:
            self.commit.reset(reset)

    def end(self, r: Request, state: str, error: str | None = None):
        """Finish a request: copy out its ids, stats and trace, free its slot, tell it."""
        r.state, r.error = state, error
        if r.slot is not None:
            slot, P, T, G = r.slot, len(r.prompt), r.length, r.config.gen_length
            ids = self.seqs.x[slot, P:T].cpu()
            r.ids = ids.tolist()
            r.tokens = r.ids
            r.committed = G if state == "done" else r.committed
            gen_tokens = next((i for i, t in enumerate(r.ids) if t in self.eos_ids), G)
            wall = time.perf_counter() - r.t_admit
            r.stats = RowStats(r.nfe, gen_tokens, gen_tokens / max(r.nfe, 1), wall,
                               gen_tokens / wall if wall > 0 else 0.0)
            trace_step, trace_conf = self.seqs.trace_step, self.seqs.trace_conf
            if r.config.trace:
                r.trace = Trace(trace_step[slot, None, :G].clone(),
                                trace_conf[slot, None, :G].clone())
            r.steps = trace_step[slot, :G].tolist()
            r.confidence = trace_conf[slot, :G].tolist()
            if state == "done":
                self.counters["gen_tokens"] += gen_tokens
            self.slots[slot] = None
            r.slot = None
        r.generator = r.features = None
        if r.listener is not None:
            _notify(r)


def describe(err: Exception) -> str:
    return f"decoding failed: {type(err).__name__}: {err}"


def _host(*tensors: Tensor) -> list:
    return [t.tolist() for t in tensors]


def _notify(r: Request):
    try:
        r.listener(r)
    except Exception:  # a listener's failure must not stop the engine
        r.listener = None
        r.cancel()


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
