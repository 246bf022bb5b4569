"""Native Dream: a bidirectional Qwen2 transformer with shifted logits.

The whole forward pass is here. It follows the Dream checkpoint format (DESIGN.md,
"Checkpoint formats"): Qwen2 tensor names, RMSNorm in float32, rotate-half rotary embedding
at absolute positions, q/k/v biases, grouped-query attention through torch SDPA without a
causal mask, SwiGLU MLP. Dream was initialised from an autoregressive model and keeps its
next-token layout: the prediction for position i comes from the hidden state at i - 1.
"""

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stdec.errors import StdecError
from stdec.models.cache import KVCache
from stdec.models.interface import NO_DEFAULTS, Configurable
from stdec.models.layers import RMSNorm, apply_rope, attend, fuse_linears, qkv_heads, sdpa_mask

__all__ = ["DreamConfig", "DreamModel"]


@dataclass
class DreamConfig:
    hidden_size: int = 3584
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int | None = 4  # None: same as num_attention_heads
    intermediate_size: int = 18944
    vocab_size: int = 152064
    max_position_embeddings: int = 131072
    rope_theta: float = 1000000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    mask_token_id: int = 151666
    pad_token_id: int = 151643
    eos_token_id: int = 151643
    bos_token_id: int | None = 151643

    def __post_init__(self):
        self.num_key_value_heads = self.num_key_value_heads or self.num_attention_heads
        if self.hidden_size % self.num_attention_heads or self.n_heads % self.n_kv_heads:
            raise StdecError(
                f"hidden_size ({self.hidden_size}) must divide into num_attention_heads "
                f"({self.n_heads}) heads and those into num_key_value_heads ({self.n_kv_heads}) "
                "groups."
            )
        for name in ("mask_token_id", "pad_token_id", "eos_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise StdecError(f"{name} must be in [0, vocab_size={self.vocab_size}), got "
                                 f"{getattr(self, name)}.")

    # the names the decoding loop and the cache read (LLaDAConfig's)
    n_layers = property(lambda self: self.num_hidden_layers)
    n_heads = property(lambda self: self.num_attention_heads)
    n_kv_heads = property(lambda self: self.num_key_value_heads)
    max_sequence_length = property(lambda self: self.max_position_embeddings)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict) -> "DreamConfig":
        """Read a Dream (Qwen2) config.json; keys this implementation does not use are ignored."""
        if raw.get("hidden_act", "silu") != "silu":
            raise StdecError(f"config.json has hidden_act={raw['hidden_act']!r}; stdec's Dream "
                             "supports only 'silu'.")
        if raw.get("rope_scaling") or raw.get("use_sliding_window"):
            raise StdecError("config.json asks for rope_scaling or sliding-window attention; "
                             "stdec's Dream supports plain rotary embeddings and full attention.")
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in raw.items() if k in names and v is not None}
        if isinstance(kw.get("eos_token_id"), list):  # several end tokens: the first is EOS
            kw["eos_token_id"] = kw["eos_token_id"][0]
        return cls(**kw)

    def to_dict(self) -> dict:
        return {
            "architectures": ["DreamModel"],
            "model_type": "Dream",
            **asdict(self),
            "hidden_act": "silu",
            "rope_scaling": None,
            "use_sliding_window": False,
        }


class DreamAttention(nn.Module):
    def __init__(self, cfg: DreamConfig):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
        self.q_proj = nn.Linear(d, cfg.n_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=True)
        self.o_proj = nn.Linear(cfg.n_heads * hd, d, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                cache: KVCache | None, layer: int, start: int, causal: bool) -> Tensor:
        B, L, _ = x.shape
        q, k, v = qkv_heads(self, x)  # (B, H, L, D), (B, H_kv, L, D) x 2
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, start, k, v)  # (B, H_kv, T, D): every cached position
        a = attend(q, k, v, mask, causal)  # (B, H, L, D)
        return self.o_proj(a.transpose(1, 2).reshape(B, L, -1))


class DreamMLP(nn.Module):
    def __init__(self, cfg: DreamConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x) if hasattr(self, "gate_up_proj") else \
            (self.gate_proj(x), self.up_proj(x))
        return self.down_proj(F.silu(gate) * up)


class DreamLayer(nn.Module):
    def __init__(self, cfg: DreamConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DreamAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = DreamMLP(cfg)

    def fuse(self):
        """One multiply for Q, K and V, one for the gate and up projections (inference)."""
        fuse_linears(self.self_attn, "qkv_proj", ["q_proj", "k_proj", "v_proj"])
        fuse_linears(self.mlp, "gate_up_proj", ["gate_proj", "up_proj"])

    def forward(self, h: Tensor, *attn_args) -> Tensor:
        h = h + self.self_attn(self.input_layernorm(h), *attn_args)
        return h + self.mlp(self.post_attention_layernorm(h))


class DreamModel(nn.Module, Configurable):
    """Dream with the checkpoint's tensor names (model.*, lm_head)."""

    # the model interface's traits (models/interface.py)
    logits_shift = 1  # logits at i come from hidden state i - 1; the loop feeds one more left
    prefix_lm = False
    greedy_first_token = False
    system_prompt: str | None = None
    cuda_graphs = True
    decoding_defaults = NO_DEFAULTS

    def __init__(self, cfg: DreamConfig):
        super().__init__()
        self.config = cfg
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.model.layers = nn.ModuleList(DreamLayer(cfg) for _ in range(cfg.n_layers))
        self.model.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        # a plain attribute, not a buffer: module.to(dtype) must not round it
        self.inv_freq = torch.empty(0)

    def _rope(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin (B, 1, L, D) in float32, computed for the given positions only: Dream's
        131072 positions would make a full table large."""
        if self.inv_freq.device != position_ids.device or not self.inv_freq.numel():
            hd = self.config.head_dim
            exps = torch.arange(0, hd, 2, dtype=torch.float32, device=position_ids.device) / hd
            self.inv_freq = 1.0 / self.config.rope_theta ** exps
        freqs = position_ids[..., None].float() * self.inv_freq  # (B, L, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, L, D): rotate-half layout
        return angles.cos(), angles.sin()

    # read from the final norm: the embedding table may be quantized (models/quant.py)
    @property
    def device(self) -> torch.device:
        return self.model.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.norm.weight.dtype

    def fuse(self) -> "DreamModel":
        """Fuse each block's projections that read one input (for inference: training keeps
        them apart). The state dict, and so the checkpoint, is unchanged."""
        for block in self.model.layers:
            block.fuse()
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, table: nn.Module):
        """Swap the token embedding (a QuantizedEmbedding, models/quant.py)."""
        self.model.embed_tokens = table

    def blocks(self) -> nn.ModuleList:
        """The transformer layers (what weight-only quantization rewrites, models/quant.py)."""
        return self.model.layers

    def output_head(self) -> nn.Linear | None:
        """lm_head, None when it is the input embedding (tie_word_embeddings)."""
        return None if self.config.tie_word_embeddings else self.lm_head

    def new_cache(self, batch: int, length: int) -> KVCache:
        cfg = self.config
        return KVCache(cfg.n_layers, batch, cfg.n_kv_heads, length, cfg.head_dim,
                       dtype=self.dtype, device=self.device)

    def forward(self, input_ids: Tensor, *, position_ids: Tensor | None = None,
                attention_mask: Tensor | None = None, cache: KVCache | None = None,
                cache_start: int = 0, logits_slice: slice | None = None,
                logits_index: Tensor | None = None, causal: bool = False,
                inputs_embeds: Tensor | None = None) -> Tensor:
        """Logits (B, L', V) for input_ids (B, L) at sequence positions cache_start .. + L.

        Arguments as LLaDAModelLM.forward. The logits are shifted right by one over the fed
        span (the first fed position keeps its own), then `logits_slice` picks positions:
        so to get position s's logits with a cache, feed from s - 1. `logits_index` (B, L')
        picks per row, with the same shift.
        """
        B, L = input_ids.shape
        if causal and (cache is not None or attention_mask is not None):
            raise ValueError("causal attention is for reference checks: no cache, no mask")
        if position_ids is None:
            position_ids = torch.arange(cache_start, cache_start + L, device=input_ids.device)
            position_ids = position_ids.expand(B, L)
        cos, sin = self._rope(position_ids)  # (B, 1, L, D)
        mask = sdpa_mask(attention_mask)
        h = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        for i, layer in enumerate(self.model.layers):
            h = layer(h, cos, sin, mask, cache, i, cache_start, causal)
        if logits_index is not None:  # position i from hidden state i - 1 (the first: its own)
            idx = (logits_index - self.logits_shift).clamp(min=0)
            h = h.gather(1, idx[..., None].expand(-1, -1, h.shape[-1]))  # (B, L', d)
        else:
            h = self._pick(h, logits_slice or slice(None))
        h = self.model.norm(h)
        head = self.model.embed_tokens if self.config.tie_word_embeddings else self.lm_head
        return F.linear(h, head.weight)

    def _pick(self, h: Tensor, rows: slice) -> Tensor:
        """Hidden states whose logits are wanted: h[:, rows] after the shift (B, L', d)."""
        if not self.logits_shift:
            return h[:, rows]
        r = range(h.shape[1])[rows]
        if r.step == 1 and r.start >= 1:  # the loop's case: a view, no copy
            return h[:, r.start - 1 : r.stop - 1]
        return torch.cat([h[:, :1], h[:, :-1]], dim=1)[:, rows]  # cat(h[:1], h[:-1]) as Dream
