"""Continuous batching: slots, admission, per-row blocks, refresh, commit. The one decode loop.

The engine holds `max_batch` slots. A request owns one slot from admission to its last
commit, with its own prompt length, gen_length, block position, DecodeConfig, sampling
generator, stats and trace. Each iteration (`step`):
  1. drops cancelled or timed-out requests and admits waiting ones into free slots;
  2. runs the forwards: rows at a block start (and rows without a cache) take a full
     forward, which refreshes their K/V; the other rows take one block step, one batched
     forward per cache mode (prefix, dual; on CUDA the dual step runs at fixed shapes,
     replayed as a CUDA graph: graphs.py);
  3. each row commits by its own rule (one policy call per distinct DecodeConfig);
  4. reads, in one host sync, each row's first masked position: that gives its block, its
     committed prefix (what is streamed) and whether it is finished; a finished row frees
     its slot at once.

Every slot's sequence starts at column 0 of its row of `x` (positions = columns); rows of
one forward are padded on the right, padding is masked out of attention, and each row's
K/V lives in its own row of one preallocated KVCache, written by position. So a row
decodes as it would alone, whatever else is in flight. The engine knows no task and no
HTTP: it is driven by a plain loop (`run`, or a server thread calling `step`). `decode()`,
at the end, is its batch face for stdec.generate, bench, tune and lm-eval: every prompt
gets a slot, the engine runs to completion, the rows come back in order.

Images (vision-language models): a request's prompt holds one placeholder id per image and
the request carries the images. At admission the model expands the placeholders into one id
per image vector, -1 - j for row j of the request's feature table; the engine keeps that
table in the slot's row of `features` and, in a forward, offsets each row's negative ids by
its slot, so the model reads every row's vectors from one table.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stdec.decoding.config import DecodeConfig
from stdec.decoding.graphs import on_device
from stdec.decoding.policies import NEEDS, StepState, select
from stdec.decoding.runner import ModelRunner
from stdec.decoding.scheduler import Request, RowStats, Scheduler, Sequences, Trace, describe
from stdec.errors import StdecError

__all__ = ["DecodeOutput", "Engine", "Request", "RowStats", "Trace", "confidence", "decode",
           "eos_stop"]


CONFIDENCE_CHUNK = 1 << 24  # logits read in float32 at a time: 64 MB (4 rows at LLaDA's vocab)


def confidence(logits: Tensor, mask_id: int, temperature: float,
               generators: Sequence[torch.Generator] | None) -> tuple[Tensor, Tensor]:
    """Prediction and its probability for each position. logits (B, L, V) -> (B, L), (B, L).

    The mask token is never a prediction (committing it would undo the commit). With a
    temperature the prediction is Gumbel-max sampled in float64 and the confidence is its
    probability under the model, as in LLaDA. `generators` (one per row, needed when
    temperature > 0): each row's noise comes from its own, so it never depends on the batch.
    Rows are read in float32 a few at a time, never as one float32 copy of every row's
    vocabulary (half a gigabyte for a batch of 32 blocks at LLaDA's vocab).
    """
    B, L, V = logits.shape
    per = max(1, CONFIDENCE_CHUNK // max(L * V, 1))
    if B <= per:
        return _confidence(logits, mask_id, temperature, generators)
    parts = [_confidence(logits[i : i + per], mask_id, temperature,
                         generators[i : i + per] if generators is not None else None)
             for i in range(0, B, per)]
    return torch.cat([c for c, _ in parts]), torch.cat([p for _, p in parts])


def _confidence(logits: Tensor, mask_id: int, temperature: float,
                generators: Sequence[torch.Generator] | None) -> tuple[Tensor, Tensor]:
    logits = logits.float()
    logits[..., mask_id] = -math.inf
    if temperature > 0:
        u = torch.stack([torch.rand(logits.shape[1:], generator=g, device=logits.device,
                                    dtype=torch.float64) for g in generators])
        pred = (logits.double() / temperature - torch.log(-torch.log(u))).argmax(-1)
    else:
        pred = logits.argmax(-1)
    log_p = logits.gather(-1, pred[..., None])[..., 0] - logits.logsumexp(-1)
    return log_p.exp(), pred


def eos_stop(gen: Tensor, eos_ids: Tensor, mask_id: int) -> Tensor:
    """Masks after a row's first EOS, once everything before that EOS is decoded. (B, G) bool."""
    G = gen.shape[1]
    pos = torch.arange(G, device=gen.device)
    first_eos = torch.where(torch.isin(gen, eos_ids), pos, G).min(dim=1, keepdim=True).values
    is_mask = gen == mask_id
    first_mask = torch.where(is_mask, pos, G).min(dim=1, keepdim=True).values
    return (first_eos < first_mask) & (pos > first_eos) & is_mask


class Engine:
    """Continuous batching over `max_batch` slots of up to `max_length` positions each.

    submit() queues a request; step() runs one iteration; run() steps until idle. Inputs are
    assumed validated (stdec.generate and the server do it); a request longer than
    max_length fails alone.
    """

    def __init__(self, model, *, max_batch: int = 8, max_length: int | None = None,
                 eos_ids: Sequence[int] = (), static_step: bool | None = None):
        """`static_step`: run dual-cache block steps at fixed shapes (decoding/graphs.py),
        captured as CUDA graphs on CUDA. None: on CUDA unless the model was loaded with
        cuda_graphs=False; True on the CPU runs them eagerly (what the tests compare)."""
        mc = model.config
        self.model, self.device = model, model.device
        self.max_batch = max_batch
        self.max_length = min(max_length or mc.max_sequence_length, mc.max_sequence_length)
        self.mask_id, self.eos_id = mc.mask_token_id, mc.eos_token_id
        eos = sorted({mc.eos_token_id, *eos_ids})
        self.eos = torch.tensor(eos, device=self.device)
        S, W, dev = max_batch, self.max_length, self.device
        self.seqs = Sequences(S, W, self.mask_id, dev)
        self.x, self.trace_step, self.trace_conf = self.seqs.x, self.seqs.trace_step, \
            self.seqs.trace_conf
        self.stable = torch.zeros(S, W, dtype=torch.long, device=dev)  # by block offset
        self.prev = torch.full((S, W), -1, dtype=torch.long, device=dev)
        # rule state, by block offset (policies.NEEDS): memory of stateful rules, wino's
        # drafts, klass's previous log-probabilities (allocated when a klass row arrives)
        self.memory = torch.zeros(S, W, device=dev)
        self.drafted = torch.zeros(S, W, dtype=torch.bool, device=dev)
        self.prev_logp: Tensor | None = None
        self.runner = ModelRunner(model, self.seqs, max_batch=max_batch,
                                  max_length=self.max_length, static_step=static_step)
        self.scheduler = Scheduler(self.seqs, self.runner, self, max_batch=max_batch,
                                   max_length=self.max_length, mask_id=self.mask_id,
                                   eos_ids=set(eos))

    @property
    def slots(self) -> list[Request | None]:
        return self.scheduler.slots

    @property
    def waiting(self) -> deque[Request]:
        return self.scheduler.waiting

    @property
    def counters(self) -> dict[str, int]:
        return self.scheduler.counters

    def reset(self, slots):
        self.stable[slots] = 0
        self.prev[slots] = -1
        self.memory[slots] = 0
        self.drafted[slots] = False

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
            self._run(kind, rows)  # the forward, then each DecodeConfig's commit
        self.scheduler.advance()  # one host sync: blocks, committed prefixes, finished rows
        return True

    def _run(self, kind: str, rows: list[Request]):
        """Forward `rows` together and commit; an error fails the rows that cause it alone."""
        try:
            logits = self.runner.forward(kind, rows)
        except Exception as err:
            if len(rows) == 1:
                return self.scheduler.end(rows[0], "failed", describe(err))
            for r in rows:  # find the row at fault: each alone
                self._run(kind, [r])
            return
        by_config: dict[DecodeConfig, list[int]] = {}
        for i, r in enumerate(rows):
            by_config.setdefault(r.config, []).append(i)
        for cfg, idx in by_config.items():
            members = [rows[i] for i in idx]
            picked = logits if len(idx) == len(rows) else logits[idx]
            try:
                self._commit(cfg, members, picked)
            except Exception as err:
                if len(members) == 1:
                    self.scheduler.end(members[0], "failed", describe(err))
                    continue
                for i, r in zip(idx, members, strict=True):
                    try:
                        self._commit(cfg, [r], logits[i : i + 1])
                    except Exception as row_err:
                        self.scheduler.end(r, "failed", describe(row_err))

    def _commit(self, cfg: DecodeConfig, rows: list[Request], logits: Tensor):
        """Confidence, the rule and the commit for rows that share one DecodeConfig."""
        dev, bl, G = self.device, cfg.block_length, cfg.gen_length
        logits = logits[:, :bl]
        generators = [r.generator for r in rows] if cfg.temperature > 0 else None
        conf, pred = confidence(logits, self.mask_id, cfg.temperature, generators)
        slot_t = on_device([r.slot for r in rows], dev)
        rows_t = slot_t[:, None]
        starts = on_device([r.block for r in rows], dev)[:, None]  # (n, 1)
        prompt = on_device([len(r.prompt) for r in rows], dev)[:, None]
        offsets = torch.arange(bl, device=dev)
        cols = starts + offsets  # (n, L) absolute positions of the block
        current = self.x[rows_t, cols]
        masked = current == self.mask_id
        held = pred == self.prev[rows_t, offsets]
        stable = torch.where(held, self.stable[rows_t, offsets] + 1, 1)
        self.prev[rows_t, offsets] = pred
        self.stable[rows_t, offsets] = stable
        step_t = on_device([r.step for r in rows], dev)[:, None]
        state = StepState(masked, self.x[slot_t] != self.mask_id, starts, stable, step_t,
                          seq_end=prompt + G)
        needs = NEEDS.get(cfg.policy, frozenset())
        if needs:
            self._rule_inputs(needs, state, logits, current, rows_t, offsets)
        commit = select(conf, pred, state, cfg)
        new = torch.where(commit, pred, current)
        remask = state.remask
        if remask is not None:  # wino takes drafts back: masked again, out of the trace
            new = new.masked_fill(remask, self.mask_id)
        self.x[rows_t, cols] = new
        if "memory" in needs:
            self.memory[rows_t, offsets] = state.memory.float()
        if "drafted" in needs:
            drafted = state.drafted | commit
            self.drafted[rows_t, offsets] = drafted if remask is None else drafted & ~remask
        for r in rows:
            r.nfe += 1
        nfe = on_device([r.nfe for r in rows], dev)[:, None]
        g = cols - prompt  # block positions within the generated region
        self.trace_step[rows_t, g] = torch.where(commit, nfe, self.trace_step[rows_t, g])
        self.trace_conf[rows_t, g] = torch.where(commit, conf, self.trace_conf[rows_t, g])
        if remask is not None:
            self.trace_step[rows_t, g] = self.trace_step[rows_t, g].masked_fill(remask, -1)
            self.trace_conf[rows_t, g] = self.trace_conf[rows_t, g].masked_fill(remask, math.nan)
        if cfg.stop_at_eos:
            gen_cols = prompt + torch.arange(G, device=dev)  # (n, G)
            gen = self.x[rows_t, gen_cols]
            fill = eos_stop(gen, self.eos, self.mask_id)
            self.x[rows_t, gen_cols] = gen.masked_fill(fill, self.eos_id)
            self.trace_step[slot_t, :G] = torch.where(fill, nfe, self.trace_step[slot_t, :G])

    def _rule_inputs(self, needs: frozenset[str], state: StepState, logits: Tensor,
                     current: Tensor, rows_t: Tensor, offsets: Tensor):
        """Fill what the rule reads beyond confidence (policies.NEEDS) into `state`."""
        if needs & {"entropy", "kl", "token_conf"}:
            logits = logits.float()
            logits[..., self.mask_id] = -math.inf  # as confidence(): never a prediction
            logp = logits.log_softmax(-1)  # (n, L, V)
            p = logp.exp()
        if "entropy" in needs:
            state.entropy = -torch.special.xlogy(p, p).sum(-1)
        if "kl" in needs:
            n, length, vocab = logp.shape
            old = self.prev_logp
            if old is None or old.shape[1] < length or old.shape[2] != vocab:
                self.prev_logp = torch.zeros(self.max_batch, length, vocab, device=self.device)
                if old is not None and old.shape[2] == vocab:  # rows mid-block keep theirs
                    self.prev_logp[:, : old.shape[1]] = old
            prev = self.prev_logp[rows_t, offsets]
            kl = torch.where(p > 0, p * (logp - prev), 0.0).sum(-1)
            state.kl = torch.where(state.step == 0, math.inf, kl)  # nothing before the block
            self.prev_logp[rows_t, offsets] = logp
        if "token_conf" in needs:
            state.token_conf = logp.gather(-1, current[..., None])[..., 0].exp()
        if "drafted" in needs:
            state.drafted = self.drafted[rows_t, offsets]
        if "memory" in needs:
            state.memory = self.memory[rows_t, offsets]

# ---- the batch face: stdec.generate, bench, tune and lm-eval ----

@dataclass
class DecodeOutput:
    ids: Tensor  # (B, G) generated ids
    stats: list[RowStats]
    trace: Trace | None


def decode(model, prompt_ids: Sequence[Sequence[int]],
           cfg: DecodeConfig | Sequence[DecodeConfig], *,
           eos_ids: Sequence[int] = (), images: Sequence[list] | None = None) -> DecodeOutput:
    """Generate gen_length tokens after each prompt (token ids, any lengths).

    `cfg` is one DecodeConfig for every row, or one per row (e.g. each with its own seed;
    they must share gen_length). The model's config gives the mask, pad and EOS ids;
    `eos_ids` adds end tokens (e.g. <|eot_id|>). Inputs are assumed validated
    (stdec.generate does it). Every row gets a slot, so all decode at once. `images`, for a
    vision-language model, gives each prompt its images (one per placeholder id; [] for none).
    """
    configs = [cfg] * len(prompt_ids) if isinstance(cfg, DecodeConfig) else list(cfg)
    if len(configs) != len(prompt_ids) or len({c.gen_length for c in configs}) != 1:
        raise StdecError("decode needs one DecodeConfig, or one per prompt with one gen_length.")
    images = list(images) if images is not None else [[]] * len(prompt_ids)
    if len(images) != len(prompt_ids):
        raise StdecError("decode needs one list of images per prompt.")
    longest = max((model.prompt_length(p, im) if im else len(p)) + c.gen_length
                  for p, c, im in zip(prompt_ids, configs, images, strict=True))
    engine = Engine(model, max_batch=len(prompt_ids), max_length=longest, eos_ids=eos_ids)
    requests = [engine.submit(p, c, images=im)
                for p, c, im in zip(prompt_ids, configs, images, strict=True)]
    engine.run()
    for r in requests:
        if r.state != "done":
            raise StdecError(f"decoding prompt {requests.index(r)} failed: {r.error}.")
    ids = torch.tensor([r.ids for r in requests], dtype=torch.long, device=model.device)
    trace = None
    if configs[0].trace:
        trace = Trace(torch.cat([r.trace.step for r in requests]),
                      torch.cat([r.trace.confidence for r in requests]))
    return DecodeOutput(ids, [r.stats for r in requests], trace)
