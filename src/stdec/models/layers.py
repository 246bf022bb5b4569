"""Pieces both model files use: RMSNorm in float32, the rotate-half rotary embedding,
grouped-query attention through SDPA, and load-time fusion of projections that read the
same input."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FusedLinear", "RMSNorm", "apply_rope", "attend", "fuse_linears", "qkv_heads",
           "rotate_half", "sdpa_mask"]

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


def qkv_heads(attn: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x (B, L, d) -> q (B, H, L, D), k and v (B, H_kv, L, D) through `attn`'s q/k/v_proj, or
    its qkv_proj once fused (fuse_linears)."""
    B, L, _ = x.shape
    if hasattr(attn, "qkv_proj"):
        q, k, v = attn.qkv_proj(x)
    else:
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    heads = (attn.n_heads, attn.n_kv_heads, attn.n_kv_heads)
    return tuple(t.view(B, L, n, attn.head_dim).transpose(1, 2)
                 for t, n in zip((q, k, v), heads, strict=True))


def sdpa_mask(attention_mask: Tensor | None) -> Tensor | None:
    """A forward's attention_mask as SDPA's: (B, T) -> (B, 1, 1, T), one per row; (B, L, T) ->
    (B, 1, L, T), one per fed position (a prefix LM's prompt sees only the prompt)."""
    if attention_mask is None:
        return None
    if attention_mask.dim() == 3:
        return attention_mask[:, None]
    return attention_mask[:, None, None, :]


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


class FusedLinear(nn.Module):
    """Linear layers that read one input, as one matrix multiply: their weights stacked by
    output rows. forward returns each layer's output, in order."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.sizes = [layer.out_features for layer in layers]
        self.in_features, self.out_features = layers[0].in_features, sum(self.sizes)
        with torch.no_grad():
            self.weight = nn.Parameter(torch.cat([layer.weight for layer in layers]),
                                       requires_grad=False)
            biases = [layer.bias for layer in layers]
            self.bias = None if biases[0] is None else nn.Parameter(torch.cat(biases),
                                                                    requires_grad=False)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return F.linear(x, self.weight, self.bias).split(self.sizes, dim=-1)


def fuse_linears(module: nn.Module, fused: str, names: list[str]):
    """Replace `module`'s Linear children `names` by one FusedLinear child `fused` (for
    inference). The state dict keeps the children's own names both ways (hooks split the
    fused tensors on save and stack the named ones on load), so a checkpoint reads and
    writes exactly as before. Fusing twice changes nothing."""
    if hasattr(module, fused):
        return
    setattr(module, fused, FusedLinear([getattr(module, n) for n in names]))
    for n in names:
        delattr(module, n)
    sizes = getattr(module, fused).sizes

    def split(mod, state, prefix, meta):
        for kind in ("weight", "bias"):
            stacked = state.pop(f"{prefix}{fused}.{kind}", None)
            if stacked is not None:  # copies: safetensors refuses tensors that share memory
                for n, part in zip(names, stacked.split(sizes), strict=True):
                    state[f"{prefix}{n}.{kind}"] = part.clone()

    def stack(state, prefix, *args):
        for kind in ("weight", "bias"):
            keys = [f"{prefix}{n}.{kind}" for n in names]
            if all(k in state for k in keys):
                state[f"{prefix}{fused}.{kind}"] = torch.cat([state.pop(k) for k in keys])

    module._register_state_dict_hook(split)
    module._register_load_state_dict_pre_hook(stack)
