"""The dual-cache block step at fixed shapes, so that a GPU can replay it as a CUDA graph.

An eager block step costs a few hundred small kernel launches and the Python between them;
at LLaDA-8B's shape on a GPU that overhead is as large as the step's own work. Here the step
runs over a span of the engine's slots, 0 .. m, each fed block_length (+ shift) tokens,
attending over the first K cache positions. m and K are rounded up to buckets (powers of two
for m, multiples of KEY_BUCKET for K), so a handful of shapes covers every mix of rows, and
on CUDA each shape is captured once and replayed after.

Rows of the span that are not in this step (free slots, rows refreshing this iteration, rows
of another cache mode) are padding: they feed the mask id at position 0, write their K/V into
the cache's scratch column (max_length) and attend to key 0 only, and their logits are
dropped. Rows of the step attend to their own keys (0 .. their length) through an additive
mask, so each row decodes as it would alone. On the CPU nothing is captured: the engine
keeps its eager step there, and the tests run this one eagerly to check that both agree.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

__all__ = ["KEY_BUCKET", "StaticBlockStep", "on_device"]

KEY_BUCKET = 256  # keys attended are rounded up to a multiple of this


def on_device(values: list, device: torch.device) -> Tensor:
    """A small tensor of `values` (ints) on `device`. On CUDA it goes through pinned memory
    without blocking: torch.tensor(values, device="cuda") waits for the stream to drain (a
    host sync per call, a dozen per step), so the GPU would idle while Python prepares the
    next kernels."""
    t = torch.tensor(values)
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


class StaticBlockStep:
    """Dual-cache block steps at bucketed shapes over one KVCache; `capture` replays each
    shape as a CUDA graph (the model, its cache and the engine's `x` must stay where they are
    for as long as this object lives)."""

    def __init__(self, model, cache, *, max_batch: int, max_length: int, capture: bool):
        self.model, self.cache = model, cache
        self.max_batch, self.max_length = max_batch, max_length
        self.shift = model.logits_shift
        self.mask_id = model.config.mask_token_id
        self.device, self.dtype = model.device, model.dtype
        self.capture = capture and self.device.type == "cuda"
        self.inputs: dict[tuple[int, int, int], tuple] = {}  # buffers and cache view
        self.outputs: dict[tuple[int, int, int], Tensor] = {}
        self.graphs: dict[tuple[int, int, int], torch.cuda.CUDAGraph] = {}
        self.pool = None

    def shape(self, slots: list[int], ends: list[int], block_length: int) -> tuple[int, int, int]:
        """(span m, keys K, block length) for a step over `slots` whose rows end at `ends`."""
        m = min(1 << max(slots).bit_length(), self.max_batch)  # slots 0 .. max(slots)
        keys = min(math.ceil(max(ends) / KEY_BUCKET) * KEY_BUCKET, self.max_length)
        return m, keys, block_length

    def __call__(self, x: Tensor, slots: list[int], starts: list[int], ends: list[int],
                 block_length: int) -> Tensor:
        """Logits (n, block_length, V) of each row's block: row i is slot slots[i], its block
        starts at starts[i] and its sequence ends at ends[i]."""
        key = self.shape(slots, ends, block_length)
        m, keys, bl = key
        if key not in self.inputs:
            self.inputs[key] = self._buffers(m, keys, bl)
        ids, pos, write, mask, _ = self.inputs[key]
        dev, width = self.device, bl + self.shift
        meta = on_device([slots, starts, ends], dev)  # one copy to the device, not blocking
        slot_t, start_t, end_t = meta[0], meta[1], meta[2]
        cols = (start_t - self.shift)[:, None] + torch.arange(width, device=dev)  # (n, width)
        ids.fill_(self.mask_id)
        pos.zero_()
        write.fill_(self.max_length)  # the scratch column
        ids[slot_t] = x[slot_t[:, None], cols]
        pos[slot_t] = cols
        write[slot_t] = cols
        last = torch.ones(m, dtype=torch.long, device=dev)  # padding rows see key 0 only
        last[slot_t] = end_t
        visible = torch.arange(keys, device=dev) < last[:, None]
        mask.copy_(torch.where(visible, 0.0, -math.inf))
        if not self.capture:
            return self._forward(key)[slot_t]
        if key not in self.graphs and not self._capture(key):
            return self._forward(key)[slot_t]
        self.graphs[key].replay()
        return self.outputs[key][slot_t]

    def _buffers(self, m: int, keys: int, bl: int) -> tuple:
        """The step's inputs, filled in place before each run, and its view of the cache
        (built here: making its slot index copies to the device, which a capture forbids)."""
        dev, width = self.device, bl + self.shift
        write = torch.empty(m, width, dtype=torch.long, device=dev)  # cache columns written
        return (torch.empty(m, width, dtype=torch.long, device=dev),  # ids
                torch.empty(m, width, dtype=torch.long, device=dev),  # positions
                write,
                torch.empty(m, keys, dtype=self.dtype, device=dev),  # additive key mask
                self.cache.slots(list(range(m)), write, keys))  # slots 0 .. m: a view

    def _forward(self, key: tuple[int, int, int]) -> Tensor:
        ids, pos, _, mask, cache = self.inputs[key]
        bl = key[2]
        return self.model(ids, position_ids=pos, attention_mask=mask, cache=cache,
                          logits_slice=slice(self.shift, self.shift + bl))

    def _capture(self, key: tuple[int, int, int]) -> bool:
        """Capture `key`'s step as a CUDA graph. The warm-up runs are this step itself (same
        inputs, same K/V written), so they change nothing. On failure graphs are switched off
        for this engine, with a warning: the eager step gives the same numbers."""
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # kernel selection and allocator warm-up, off the graph
                    self._forward(key)
            torch.cuda.current_stream(self.device).wait_stream(side)
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.outputs[key] = self._forward(key)
        except Exception as err:  # the GPU stack refused: run eagerly, and say so once
            warnings.warn(f"CUDA graph capture failed ({type(err).__name__}: {err}); block "
                          "steps run eagerly (same results, slower).", stacklevel=2)
            self.capture = False
            return False
        self.graphs[key] = graph
        return True
