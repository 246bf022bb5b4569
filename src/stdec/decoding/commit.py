"""The commit step: from a block's logits to the tokens written, by each row's rule.

For the rows of one DecodeConfig: the prediction and its confidence at each position of the
active block, what the rule reads beyond them (its registry entry's `needs`: entropy, KL to
the previous step, the probability of the tokens in place, its drafts, its memory), the rule
itself (policies.select, with the at-least-one rule), the write (a rule that `remasks` may
take drafted tokens back), the trace and the EOS stop.

Per-slot state, by block offset, zero at each block start (`reset`): how many steps each
prediction has held and the previous prediction (every rule's `stable`), the memory of rules
that read `memory`, the drafts of rules that read `drafted`, and for rules that read `kl`
the previous step's log-probabilities (allocated when such a row arrives).

A row for which `greedy_first(row)` holds (LaViDa-Dream under its prefix LM; None for a
model without that trait) commits, at its first forward, the first generated position alone,
by argmax whatever its confidence: the official generate's autoregressive first token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from stdec.decoding import compat, registry
from stdec.decoding.config import DecodeConfig
from stdec.decoding.graphs import on_device
from stdec.decoding.policies import StepState, select

if TYPE_CHECKING:
    from stdec.decoding.scheduler import Request, Sequences

__all__ = ["CONFIDENCE_CHUNK", "CommitStep", "confidence", "eos_stop"]

CONFIDENCE_CHUNK = 1 << 24  # logits read in float32 at a time: 64 MB (4 rows at LLaDA's vocab)


def confidence(logits: Tensor, mask_id: int, temperature: float,
               generators: Sequence[torch.Generator] | None,
               suppress: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Prediction and its probability for each position. logits (B, L, V) -> (B, L), (B, L).

    The mask token is never a prediction (committing it would undo the commit), nor are the
    ids in `suppress` (a DecodeConfig's suppress_ids on the logits' device): their logits are
    -inf before both the prediction and the softmax, as LLaDA-V's official generate does. With a
    temperature the prediction is Gumbel-max sampled in float64 and the confidence is its
    probability under the model, as in LLaDA. `generators` (one per row, needed when
    temperature > 0): each row's noise comes from its own, so it never depends on the batch.
    Rows are read in float32 a few at a time, never as one float32 copy of every row's
    vocabulary (half a gigabyte for a batch of 32 blocks at LLaDA's vocab).
    """
    B, L, V = logits.shape
    per = max(1, CONFIDENCE_CHUNK // max(L * V, 1))  # pragma: no mutate (memory, not values)
    if B <= per:
        return _confidence(logits, mask_id, temperature, generators, suppress)
    parts = [_confidence(logits[i : i + per], mask_id, temperature,
                         generators[i : i + per] if generators is not None else None, suppress)
             for i in range(0, B, per)]
    return torch.cat([c for c, _ in parts]), torch.cat([p for _, p in parts])


def never(logits: Tensor, mask_id: int, suppress: Tensor | None) -> Tensor:
    """`logits` in float32 with the ids that are never a prediction at -inf."""
    logits = logits.float()
    logits[..., mask_id] = -math.inf
    if suppress is not None:
        logits[..., suppress] = -math.inf
    return logits


def _confidence(logits: Tensor, mask_id: int, temperature: float,
                generators: Sequence[torch.Generator] | None,
                suppress: Tensor | None) -> tuple[Tensor, Tensor]:
    logits = never(logits, mask_id, suppress)
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


class CommitStep:
    """Commits rows of `seqs` by their rules, and keeps the rules' per-slot state."""

    def __init__(self, seqs: Sequences, *, max_batch: int, max_length: int, mask_id: int,
                 eos_id: int, eos: Tensor,
                 greedy_first: Callable[[Request], bool] | None = None):
        S, W, dev = max_batch, max_length, seqs.x.device
        self.seqs, self.max_batch, self.device = seqs, max_batch, dev
        self.mask_id, self.eos_id, self.eos = mask_id, eos_id, eos
        self.stable = torch.zeros(S, W, dtype=torch.long, device=dev)
        self.prev = torch.full((S, W), -1, dtype=torch.long, device=dev)
        self.memory = torch.zeros(S, W, device=dev)
        self.drafted = torch.zeros(S, W, dtype=torch.bool, device=dev)
        self.prev_logp: Tensor | None = None
        self.greedy_first = greedy_first

    def reset(self, slots: int | list[int]):
        """A new block (or a new request) in `slots`: its rules start from nothing."""
        self.stable[slots] = 0
        self.prev[slots] = -1
        self.memory[slots] = 0
        self.drafted[slots] = False

    def __call__(self, cfg: DecodeConfig, rows: list[Request], logits: Tensor):
        """Confidence, the rule and the commit for rows that share one DecodeConfig and one
        block width: `logits` (n, width, V), width block_length or a shorter last block's."""
        dev, bl, G = self.device, logits.shape[1], cfg.gen_length
        x, trace_step, trace_conf = self.seqs.x, self.seqs.trace_step, self.seqs.trace_conf
        generators = [r.generator for r in rows]  # None at temperature 0, and not read
        # compat fast-dllm reads the whole vocabulary: before confidence() masks the mask id
        probs = compat.probabilities(logits) if cfg.compat == "fast-dllm" else None
        suppress = on_device(list(cfg.suppress_ids), dev) if cfg.suppress_ids else None
        conf, pred = confidence(logits, self.mask_id, cfg.temperature, generators, suppress)
        slot_t = on_device([r.slot for r in rows], dev)
        rows_t = slot_t[:, None]
        starts = on_device([r.block for r in rows], dev)[:, None]  # (n, 1)
        prompt = on_device([len(r.prompt) for r in rows], dev)[:, None]
        offsets = torch.arange(bl, device=dev)
        cols = starts + offsets  # (n, L) absolute positions of the block
        current = x[rows_t, cols]
        masked = current == self.mask_id
        held = pred == self.prev[rows_t, offsets]
        stable = torch.where(held, self.stable[rows_t, offsets] + 1, 1)
        self.prev[rows_t, offsets] = pred
        self.stable[rows_t, offsets] = stable
        step_t = on_device([r.step for r in rows], dev)[:, None]
        state = StepState(masked, x[slot_t] != self.mask_id, starts, stable, step_t,
                          seq_end=prompt + G)
        needs = registry.get(cfg.policy).needs
        if needs:
            self._rule_inputs(needs, state, logits, current, rows_t, offsets, suppress)
        if cfg.compat == "fast-dllm":  # Fast-dLLM's Dream block code (decoding/compat.py)
            conf, commit = compat.commit(probs, pred, state, cfg)
        else:
            commit = select(conf, pred, state, cfg)
        first = [] if self.greedy_first is None else \
            [i for i, r in enumerate(rows) if r.nfe == 0 and self.greedy_first(r)]
        if first:  # the first generated position alone, by argmax (its block starts there)
            i = on_device(first, dev)
            conf[i, :1], pred[i, :1] = confidence(logits[i, :1], self.mask_id, 0.0, None)
            commit[i] = False
            commit[i, 0] = True
        new = torch.where(commit, pred, current)
        remask = state.remask
        if remask is not None:  # drafts taken back: masked again, out of the trace
            new = new.masked_fill(remask, self.mask_id)
        x[rows_t, cols] = new
        if "memory" in needs:
            self.memory[rows_t, offsets] = state.memory.float()
        if "drafted" in needs:
            drafted = state.drafted | commit
            self.drafted[rows_t, offsets] = drafted if remask is None else drafted & ~remask
        for r in rows:
            r.nfe += 1
        nfe = on_device([r.nfe for r in rows], dev)[:, None]
        g = cols - prompt  # block positions within the generated region
        trace_step[rows_t, g] = torch.where(commit, nfe, trace_step[rows_t, g])
        trace_conf[rows_t, g] = torch.where(commit, conf, trace_conf[rows_t, g])
        if remask is not None:
            trace_step[rows_t, g] = trace_step[rows_t, g].masked_fill(remask, -1)
            trace_conf[rows_t, g] = trace_conf[rows_t, g].masked_fill(remask, math.nan)
        if cfg.stop_at_eos:
            gen_cols = prompt + torch.arange(G, device=dev)  # (n, G)
            gen = x[rows_t, gen_cols]
            fill = eos_stop(gen, self.eos, self.mask_id)
            x[rows_t, gen_cols] = gen.masked_fill(fill, self.eos_id)
            trace_step[slot_t, :G] = torch.where(fill, nfe, trace_step[slot_t, :G])

    def _rule_inputs(self, needs: frozenset[str], state: StepState, logits: Tensor,
                     current: Tensor, rows_t: Tensor, offsets: Tensor, suppress: Tensor | None):
        """Fill what the rule reads beyond confidence (its registry entry's `needs`) into
        `state`."""
        if needs & {"entropy", "kl", "token_conf"}:
            logits = never(logits, self.mask_id, suppress)  # as confidence()
            logp = logits.log_softmax(-1)  # (n, L, V)
            p = logp.exp()
        if "entropy" in needs:
            state.entropy = -torch.special.xlogy(p, p).sum(-1)
        if "kl" in needs:
            n, length, vocab = logp.shape
            old = self.prev_logp
            # (growing also at an equal length would copy the same values: no mutants here)
            if old is None or old.shape[1] < length or old.shape[2] != vocab:  # pragma: no mutate
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
