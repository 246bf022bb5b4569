"""The model runner: each kind of forward over the rows of a step, and what it needs.

Kinds of forward (each row takes one a step; rows of one kind go together):
  full    the whole sequence; with a cache it refreshes every K/V (a block start, a row
          without a cache, dkv's periodic refresh)
  prefix  the block and everything after it, over the cached prefix
  dual    the block alone, over the cached prefix and suffix; on CUDA at fixed shapes,
          replayed as a CUDA graph (graphs.py)
  dkv     as prefix, but a token decoded two or more forwards ago keeps its cached K/V

Rows of one forward are padded on the right and the padding is masked out of attention; each
row's K/V lives in its own row of one preallocated KVCache, written by position, so a row
decodes as it would alone. A prefix LM (the model's `prefix_lm`, unless a request's
DecodeConfig.prefix_lm turns it off) gets a per-position mask: its prompt positions see the
prompt only.

Images (vision-language models): at admission the model expands a prompt's placeholders into
one id per image vector, -1 - j for row j of the request's feature table; the runner keeps
that table in the slot's row of `features` and, in a forward, offsets each row's negative ids
by its slot, so the model reads every row's vectors from one table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from stdec.decoding.compat import feeds_from
from stdec.decoding.graphs import StaticBlockStep, on_device

if TYPE_CHECKING:
    from stdec.decoding.scheduler import Request, Sequences
    from stdec.models.interface import DiffusionLM

__all__ = ["KINDS", "ModelRunner"]

KINDS = ("full", "prefix", "dual", "dkv")  # the kinds of forward, in the order a step runs them


class ModelRunner:
    """Forwards of the model over slots' rows of `seqs`, its KV cache and image table."""

    def __init__(self, model: DiffusionLM, seqs: Sequences, *, max_batch: int, max_length: int,
                 static_step: bool | None = None):
        self.model, self.seqs, self.device = model, seqs, model.device
        self.max_batch, self.max_length = max_batch, max_length
        self.mask_id = model.config.mask_token_id
        # a shifted model (logits_shift 1) predicts position i from hidden state i - 1: cached
        # steps feed `shift` extra positions on the left (s >= 1: prompts are non-empty)
        self.shift = model.logits_shift
        self.capture = model.cuda_graphs  # replay fixed-shape steps (CUDA)
        on_cuda = self.device.type == "cuda" and self.capture  # pragma: no mutate (CUDA)
        self.static_wanted = on_cuda if static_step is None else static_step
        self.static: StaticBlockStep | None = None  # built with the cache
        self.cache = None  # allocated by the first request that asks for one
        self.features: Tensor | None = None  # (S, F, d) image vectors, by the first image

    def expand(self, r: Request):
        """Run the vision tower: the prompt's placeholders become its image vectors' ids."""
        (r.prompt,), r.features = self.model.encode_prompts([r.prompt], [r.images],
                                                            r.config.image_mode)
        r.images = None

    def place(self, r: Request, slot: int):
        """Ready `slot` for `r`: the cache (on the first request that asks for one), and the
        row's image vectors."""
        if r.config.cache != "none" and self.cache is None:
            # one extra column: scratch for the padding of batched steps
            self.cache = self.model.new_cache(self.max_batch, self.max_length + 1)
            if self.static_wanted:
                self.static = StaticBlockStep(
                    self.model, self.cache, max_batch=self.max_batch, max_length=self.max_length,
                    capture=self.capture)
        if r.features is not None:
            self._store_features(slot, r.features)

    def _store_features(self, slot: int, table: Tensor):
        n, d = table.shape
        old = self.features
        if old is None or old.shape[1] < n:  # grow (rarely: the longest image prompt so far)
            self.features = torch.zeros(self.max_batch, n, d, dtype=table.dtype,
                                        device=self.device)
            if old is not None:
                self.features[:, : old.shape[1]] = old
        self.features[slot, :n] = table

    def forward(self, kind: str, rows: list[Request]) -> Tensor:
        """Logits (n, L, V) of each row's active block (L: the longest block; a shorter
        block's extra columns repeat its last position)."""
        dev, W, x = self.device, self.max_length, self.seqs.x
        slots = [r.slot for r in rows]
        ends = [r.length for r in rows]
        if kind == "dual" and self._fixed_shape(rows):
            return self.static(x, slots, [r.block for r in rows], ends, rows[0].block_width)
        if kind == "full":  # the whole sequence; with a cache, it refreshes every K/V
            starts, stops = [0] * len(rows), ends
        elif kind in ("prefix", "dkv"):  # the block and everything after it
            starts, stops = [r.block - feeds_from(r.config, self.shift) for r in rows], ends
        else:  # dual: the block alone, over the cached prefix and suffix
            starts = [r.block - feeds_from(r.config, self.shift) for r in rows]
            stops = [r.block + r.block_width for r in rows]
        width = max(b - a for a, b in zip(starts, stops, strict=True))
        keys = max(ends)
        start_t = on_device(starts, dev)[:, None]
        cols = start_t + torch.arange(width, device=dev)  # (n, L): absolute positions fed
        valid = cols < on_device(stops, dev)[:, None]
        cols = cols.clamp(max=W - 1)
        slot_t = on_device(slots, dev)
        ids = x[slot_t[:, None], cols]  # (n, L)
        mask = None
        if self._feeds_prompt(rows, starts):  # a prefix LM's prompt sees only the prompt
            mask = self._prefix_lm_mask(rows, cols, keys)
        elif min(ends) != keys:  # rows of different lengths: each attends to its own keys
            mask = torch.arange(keys, device=dev) < on_device(ends, dev)[:, None]
        cache = None
        if self.cache is not None and any(r.config.cache != "none" for r in rows):
            # padding writes its K/V into the scratch column past max_length
            write = torch.where(valid, cols, W)
            if kind == "dkv":  # dKV-Cache's delay: a token decoded two or more forwards ago
                # keeps the K/V cached at the forward after its commit (or at the refresh)
                blocks_t = on_device([r.block for r in rows], dev)[:, None]
                prompt_t = on_device([len(r.prompt) for r in rows], dev)[:, None]
                nfe_t = on_device([r.nfe for r in rows], dev)[:, None]
                at = self.seqs.trace_step[slot_t[:, None], (cols - prompt_t).clamp(min=0)]
                stale = (cols >= blocks_t) & (ids != self.mask_id) & (at >= 1) & (at < nfe_t)
                write = torch.where(stale, W, write)
            cache = self.cache.slots(slots, write, keys)
        # which fed positions' logits: the block, s .. s + its width (relative to starts)
        blocks = [r.block - a for r, a in zip(rows, starts, strict=True)]
        lengths = [r.block_width for r in rows]
        if len(set(blocks)) == 1 and len(set(lengths)) == 1:
            pick = {"logits_slice": slice(blocks[0], blocks[0] + lengths[0])}
        else:
            offsets = torch.arange(max(lengths), device=dev)
            last = on_device(lengths, dev)[:, None] - 1
            pick = {"logits_index": on_device(blocks, dev)[:, None]
                    + torch.minimum(offsets, last)}
        if any(r.features is not None for r in rows):  # row j of slot s: j + s * F of one table
            width_f = self.features.shape[1]
            ids = torch.where(ids < 0, ids - slot_t[:, None] * width_f, ids)
            pick["image_features"] = self.features.flatten(0, 1)
        return self.model(ids, position_ids=cols, attention_mask=mask, cache=cache, **pick)

    def _feeds_prompt(self, rows: list[Request], starts: list[int]) -> bool:
        """Whether a prefix LM's forward feeds prompt positions: full forwards do, and a
        shifted prefix LM's steps in its first block feed the prompt's last."""
        return any(a < len(r.prompt) and self.prefix_lm(r)
                   for a, r in zip(starts, rows, strict=True))

    def prefix_lm(self, r: Request) -> bool:
        """Whether `r` decodes under the prefix-LM mask: its option, else the model's."""
        return self.model.prefix_lm if r.config.prefix_lm is None else r.config.prefix_lm

    def _prefix_lm_mask(self, rows: list[Request], cols: Tensor, keys: int) -> Tensor:
        """(n, L, keys) for a prefix LM: fed prompt positions attend to their row's
        prompt only, generated positions to all of their row (every position, in a row
        without the prefix LM)."""
        dev = self.device
        key = torch.arange(keys, device=dev)
        prompt = on_device([len(r.prompt) if self.prefix_lm(r) else 0 for r in rows],
                           dev)[:, None, None]
        end = on_device([r.length for r in rows], dev)[:, None, None]
        return (key < end) & ((cols[..., None] >= prompt) | (key < prompt))

    def _fixed_shape(self, rows: list[Request]) -> bool:
        """Whether the fixed-shape step (graphs.py) takes these dual rows: it is on, they
        share one block width, none carries image vectors, none needs a prefix LM's
        per-position mask and none decodes under compat fast-dllm (fed from its block on)."""
        return (self.static is not None and len({r.block_width for r in rows}) == 1
                and all(r.features is None and r.config.compat == "none" for r in rows)
                and not self._feeds_prompt(rows, [r.block - self.shift for r in rows]))
