"""KV cache: preallocated per-layer K/V tensors, written by position."""

import torch
from torch import Tensor

__all__ = ["KVCache", "SlotCache"]


class KVCache:
    """K/V for every position of every slot (one row of the batch each), for every layer.

    The caller allocates it for the longest sequence and decides what to feed; the model
    writes the K/V of the positions it is fed and attends over all `length` positions.
    What is not fed keeps the K/V of the last forward that saw it (the refresh).
    """

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, length: int, head_dim: int,
                 *, dtype: torch.dtype, device: torch.device | str):
        shape = (batch, n_kv_heads, length, head_dim)  # (B, H_kv, T, D)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.length = length

    def update(self, layer: int, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (B, H_kv, L, D) at positions start .. start + L; return the full K/V."""
        end = start + k.shape[2]
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer], self.v[layer]

    def slots(self, slots: list[int], positions: Tensor, keys: int) -> "SlotCache":
        """The rows `slots` of this cache, for one forward that feeds `positions` (n, L)."""
        return SlotCache(self, slots, positions, keys)


class SlotCache:
    """Some slots of a KVCache, each fed at its own positions: what the engine passes to a
    forward whose rows sit at different blocks.

    update() writes each row's K/V at its own positions (n, L) and returns the first `keys`
    positions of those rows, which the forward attends over (longer rows' tails are masked
    by the caller). Positions equal to cache.length - 1 are a scratch column for padding.
    """

    def __init__(self, cache: KVCache, slots: list[int], positions: Tensor, keys: int):
        self.cache, self.positions, self.keys = cache, positions, keys
        device = positions.device
        first = slots[0]
        # consecutive slots are read as a view, others gathered
        self.span = slice(first, first + len(slots)) \
            if slots == list(range(first, first + len(slots))) else None
        self.index = torch.tensor(slots, device=device)
        self.length = keys

    def update(self, layer: int, start, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k, v (n, H_kv, L, D) at self.positions; returns K/V (n, H_kv, keys, D)."""
        kc, vc = self.cache.k[layer], self.cache.v[layer]
        rows = self.index[:, None]  # (n, 1)
        kc[rows, :, self.positions] = k.transpose(1, 2)  # indexed view is (n, L, H_kv, D)
        vc[rows, :, self.positions] = v.transpose(1, 2)
        if self.span is not None:
            return kc[self.span, :, : self.keys], vc[self.span, :, : self.keys]
        # index_select copies the rows in one pass; advanced indexing took twice as long
        return (kc[:, :, : self.keys].index_select(0, self.index),
                vc[:, :, : self.keys].index_select(0, self.index))
