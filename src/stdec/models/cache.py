"""KV cache: preallocated per-layer K/V tensors, written by position."""

import torch
from torch import Tensor

__all__ = ["KVCache"]


class KVCache:
    """K/V for every position of one decode, for every layer.

    The caller allocates it for the whole sequence and decides what to feed; the model
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
