"""Pieces both model files use: RMSNorm in float32 and the rotate-half rotary embedding."""

import torch
from torch import Tensor, nn

__all__ = ["RMSNorm", "apply_rope", "rotate_half"]


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
