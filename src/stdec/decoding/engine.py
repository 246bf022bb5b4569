"""Continuous batching: the one decode loop, as a facade over its three parts.

  scheduler.py  the queue and the slots: admission, reaping, each row's block (Request)
  runner.py     the model: each kind of forward, the KV cache, fixed-shape (CUDA graph) steps
  commit.py     the commit: confidence, each row's rule and the rules' per-slot state

Each iteration (`step`): the scheduler drops cancelled or timed-out requests, admits waiting
ones and sorts the rows by kind of forward; the runner runs one batched forward per kind;
each row commits by its own rule (one rule call per distinct DecodeConfig); the scheduler
reads, in one host sync, where each row stands (its block, its committed prefix, whether it
is done) and frees finished slots. A forward or a rule that fails for one row fails that row
alone. A row decodes as it would alone, whatever else is in flight.

The engine knows no task, no HTTP, no rule by name and no model by class (only
stdec.models.interface): it is driven by a plain loop (`run`, or a server thread calling
`step`). `decode()`, at the end, is its batch face for stdec.generate, bench, tune and
lm-eval: every prompt goes into one engine run of at most `max_batch` slots, a finished
row's slot takes the next prompt at once, and the rows come back in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from stdec.decoding.commit import CONFIDENCE_CHUNK, CommitStep, confidence, eos_stop
from stdec.decoding.config import DecodeConfig, check_for_model
from stdec.decoding.runner import ModelRunner
from stdec.decoding.scheduler import Request, RowStats, Scheduler, Sequences, Trace, describe
from stdec.errors import StdecError

if TYPE_CHECKING:
    from stdec.models.interface import DiffusionLM

__all__ = ["CONFIDENCE_CHUNK", "DecodeOutput", "Engine", "Request", "RowStats", "Trace",
           "confidence", "decode", "eos_stop"]


class Engine:
    """Continuous batching over `max_batch` slots of up to `max_length` positions each.

    submit() queues a request; step() runs one iteration; run() steps until idle. Inputs are
    assumed validated (stdec.generate and the server do it); a request longer than
    max_length fails alone.
    """

    def __init__(self, model: DiffusionLM, *, max_batch: int = 8, max_length: int | None = None,
                 eos_ids: Sequence[int] = (), static_step: bool | None = None):
        """`static_step`: run dual-cache block steps at fixed shapes (decoding/graphs.py),
        captured as CUDA graphs on CUDA. None: on CUDA unless the model was loaded with
        cuda_graphs=False; True on the CPU runs them eagerly (what the tests compare)."""
        mc = model.config
        self.model, self.device, self.max_batch = model, model.device, max_batch
        self.max_length = min(max_length or mc.max_sequence_length, mc.max_sequence_length)
        mask_id, eos = mc.mask_token_id, sorted({mc.eos_token_id, *eos_ids})
        self.seqs = Sequences(max_batch, self.max_length, mask_id, self.device)
        self.runner = ModelRunner(model, self.seqs, max_batch=max_batch,
                                  max_length=self.max_length, static_step=static_step)
        self.commit = CommitStep(self.seqs, max_batch=max_batch, max_length=self.max_length,
                                 mask_id=mask_id, eos_id=mc.eos_token_id,
                                 eos=torch.tensor(eos, device=self.device),
                                 greedy_first=self.runner.prefix_lm
                                 if model.greedy_first_token else None)
        self.scheduler = Scheduler(self.seqs, self.runner, self.commit, max_batch=max_batch,
                                   max_length=self.max_length, mask_id=mask_id,
                                   eos_ids=set(eos))

    # ---- the queue ----

    def submit(self, prompt: Sequence[int], config: DecodeConfig, *,
               listener: Callable[[Request], None] | None = None,
               deadline: float | None = None, progress: bool = False,
               images: list | None = None) -> Request:
        return self.add(Request(list(prompt), config, listener, deadline, progress,
                                images or None))

    def add(self, request: Request) -> Request:
        """Queue a request built by the caller (the server builds them on its own thread)."""
        return self.scheduler.add(request)

    @property
    def slots(self) -> list[Request | None]:
        return self.scheduler.slots

    @property
    def waiting(self) -> deque[Request]:
        return self.scheduler.waiting

    @property
    def counters(self) -> dict[str, int]:
        """nfe (row forwards), gen_tokens (of finished rows), steps (iterations), forwards
        (model forward calls), rerun_alone (rows run again alone after a batched forward
        failed)."""
        return self.scheduler.counters

    @property
    def active(self) -> int:
        return self.scheduler.active

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def run(self):
        """Step until every submitted request has ended."""
        while self.step():
            pass

    def cancel_all(self, reason: str):
        """End every waiting and running request with `reason` (a shutdown)."""
        self.scheduler.cancel_all(reason)

    # ---- one iteration ----

    @torch.inference_mode()
    def step(self) -> bool:
        """One iteration over every active slot; False when there is nothing to do."""
        groups = self.scheduler.schedule()  # reap, admit; the rows by kind of forward
        if not groups:
            return False
        for kind, rows in groups.items():
            self._run(kind, rows)  # the runner's forward, then each DecodeConfig's commit
        self.scheduler.advance()  # one host sync: blocks, committed prefixes, finished rows
        return True

    def _run(self, kind: str, rows: list[Request]):
        """Forward `rows` together and commit; an error fails the rows that cause it alone."""
        self.counters["forwards"] += 1
        try:
            logits = self.runner.forward(kind, rows)
        except Exception as err:
            if len(rows) == 1:
                return self.scheduler.end(rows[0], "failed", describe(err))
            self.counters["rerun_alone"] += len(rows)
            for r in rows:  # find the row at fault: each alone
                self._run(kind, [r])
            return
        # rows that share a DecodeConfig and a block width (a last block may be shorter)
        groups: dict[tuple[DecodeConfig, int], list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault((r.config, r.block_width), []).append(i)
        for (cfg, width), idx in groups.items():
            members = [rows[i] for i in idx]
            picked = logits if len(idx) == len(rows) else logits[idx]
            try:
                self.commit(cfg, members, picked[:, :width])
            except Exception as err:
                if len(members) == 1:
                    self.scheduler.end(members[0], "failed", describe(err))
                    continue
                for i, r in zip(idx, members, strict=True):
                    try:
                        self.commit(cfg, [r], logits[i : i + 1, :width])
                    except Exception as row_err:
                        self.scheduler.end(r, "failed", describe(row_err))


# ---- the batch face: stdec.generate, bench, tune and lm-eval ----

@dataclass
class DecodeOutput:
    ids: Tensor  # (B, G) generated ids
    stats: list[RowStats]
    trace: Trace | None


def decode(model, prompt_ids: Sequence[Sequence[int]],
           cfg: DecodeConfig | Sequence[DecodeConfig], *,
           eos_ids: Sequence[int] = (), images: Sequence[list] | None = None,
           max_batch: int | None = None,
           on_finish: Callable[[int, Request], None] | None = None) -> DecodeOutput:
    """Generate gen_length tokens after each prompt (token ids, any lengths).

    `cfg` is one DecodeConfig for every row, or one per row (e.g. each with its own seed;
    they must share gen_length). The model's config gives the mask, pad and EOS ids;
    `eos_ids` adds end tokens (e.g. <|eot_id|>). Inputs are assumed validated
    (stdec.generate does it). Every prompt goes into one engine run: at most `max_batch`
    rows decode at once (None: all of them), and a finished row's slot takes the next
    prompt at once, so a fast row never waits for a slow one. `on_finish(i, request)` is
    called as prompt i is done, with its ids and stats (a progress bar, early results).
    `images`, for a vision-language model, gives each prompt its images (one per
    placeholder id; [] for none).
    """
    configs = [cfg] * len(prompt_ids) if isinstance(cfg, DecodeConfig) else list(cfg)
    if len(configs) != len(prompt_ids) or len({c.gen_length for c in configs}) != 1:
        raise StdecError("decode needs one DecodeConfig, or one per prompt with one gen_length.")
    images = list(images) if images is not None else [[]] * len(prompt_ids)
    if len(images) != len(prompt_ids):
        raise StdecError("decode needs one list of images per prompt.")
    for c in set(configs):
        check_for_model(c, model)
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int)
                                  or max_batch < 1):
        raise StdecError(f"max_batch must be a positive integer or None, got {max_batch!r}.")
    # the cache holds max_batch rows as long as the longest, not the model's max length
    longest = max((model.prompt_length(p, im, c.image_mode) if im else len(p)) + c.gen_length
                  for p, c, im in zip(prompt_ids, configs, images, strict=True))
    slots = min(max_batch or len(prompt_ids), len(prompt_ids))
    engine = Engine(model, max_batch=slots, max_length=longest, eos_ids=eos_ids)
    raised: list[Exception] = []  # on_finish's error, raised once the run is over

    def finished(i: int):
        def listener(r: Request):  # called once, at the end: no progress asked for
            if r.state == "done" and not raised:
                try:
                    on_finish(i, r)
                except Exception as err:  # the engine would swallow it
                    raised.append(err)
        return listener

    requests = [engine.submit(p, c, images=im, listener=finished(i) if on_finish else None)
                for i, (p, c, im) in enumerate(zip(prompt_ids, configs, images, strict=True))]
    engine.run()
    if raised:
        raise raised[0]
    for r in requests:
        if r.state != "done":
            raise StdecError(f"decoding prompt {requests.index(r)} failed: {r.error}.")
    ids = torch.tensor([r.ids for r in requests], dtype=torch.long, device=model.device)
    trace = None
    if configs[0].trace:
        trace = Trace(torch.cat([r.trace.step for r in requests]),
                      torch.cat([r.trace.confidence for r in requests]))
    return DecodeOutput(ids, [r.stats for r in requests], trace)
