"""Pieces both model files use: RMSNorm in float32, the rotate-half rotary embedding and
grouped-query attention through SDPA."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RMSNorm", "apply_rope", "attend", "rotate_half"]

# torch >= 2.5 attends grouped K/V heads without copying them
_NATIVE_GQA = torch.__version__ >= "2.5"


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # normalise in float32 (as LLaDA and Qwen2 do), scale in the model's dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, L, D); cos, sin (B, 1, L, D) float32. Rotation in float32, as both models do."""
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool) -> Tensor:
    """q (B, H, L, D); k, v (B, H_kv, T, D) with H a multiple of H_kv -> (B, H, L, D)."""
    groups = q.shape[1] // k.shape[1]
    if groups == 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    if _NATIVE_GQA:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              enable_gqa=True)
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
