"""Native LLaDA: a bidirectional Llama-style transformer with LLaDA's tensor names.

The whole forward pass is here. It follows the LLaDA checkpoint format (DESIGN.md,
"Checkpoint formats"): RMSNorm in float32, rotate-half rotary embedding at absolute
positions, full attention through torch SDPA, SwiGLU MLP, logits over embedding_size.
"""

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stdec.errors import StdecError
from stdec.models.cache import KVCache
from stdec.models.interface import NO_DEFAULTS, Configurable
from stdec.models.layers import RMSNorm, apply_rope, attend, fuse_linears, qkv_heads, sdpa_mask

__all__ = ["LLaDAConfig", "LLaDAModelLM"]


@dataclass
class LLaDAConfig:
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None: same as n_heads
    mlp_hidden_size: int = 12288
    vocab_size: int = 126464
    embedding_size: int | None = None  # None: same as vocab_size
    max_sequence_length: int = 4096
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    mask_token_id: int = 126336
    eos_token_id: int = 126081
    pad_token_id: int = 126081
    weight_tying: bool = False
    include_bias: bool = False
    include_qkv_bias: bool = False

    def __post_init__(self):
        self.n_kv_heads = self.n_kv_heads or self.n_heads
        self.embedding_size = self.embedding_size or self.vocab_size
        if self.d_model % self.n_heads or self.n_heads % self.n_kv_heads:
            raise StdecError(
                f"d_model ({self.d_model}) must divide into n_heads ({self.n_heads}) heads and "
                f"n_heads into n_kv_heads ({self.n_kv_heads}) groups."
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_dict(cls, raw: dict) -> "LLaDAConfig":
        """Read a LLaDA config.json; keys this implementation does not use are ignored."""
        expected = {"block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu"}
        for key, value in expected.items():
            if raw.get(key, value) != value:
                raise StdecError(
                    f"config.json has {key}={raw[key]!r}; stdec's LLaDA supports only {value!r}."
                )
        if raw.get("alibi") or raw.get("rope") is False:
            raise StdecError("config.json asks for ALiBi or no rotary embedding; stdec's LLaDA "
                             "supports rotary embeddings only.")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def to_dict(self) -> dict:
        return {
            "architectures": ["LLaDAModelLM"],
            "model_type": "llada",
            **asdict(self),
            "block_type": "llama",
            "layer_norm_type": "rms",
            "activation_type": "silu",
            "rope": True,
            "alibi": False,
        }


class LLaDABlock(nn.Module):
    def __init__(self, cfg: LLaDAConfig):
        super().__init__()
        d, hd, kv = cfg.d_model, cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        qkv_bias = cfg.include_bias or cfg.include_qkv_bias
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.ff_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=qkv_bias)
        self.k_proj = nn.Linear(d, kv, bias=qkv_bias)
        self.v_proj = nn.Linear(d, kv, bias=qkv_bias)
        self.attn_out = nn.Linear(d, d, bias=cfg.include_bias)
        self.ff_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=cfg.include_bias)
        self.up_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=cfg.include_bias)
        self.ff_out = nn.Linear(cfg.mlp_hidden_size, d, bias=cfg.include_bias)

    def fuse(self):
        """One multiply for Q, K and V, one for the gate and up projections (inference)."""
        fuse_linears(self, "qkv_proj", ["q_proj", "k_proj", "v_proj"])
        fuse_linears(self, "gate_up_proj", ["ff_proj", "up_proj"])

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                cache: KVCache | None, layer: int, start: int, causal: bool) -> Tensor:
        B, L, _ = h.shape
        q, k, v = qkv_heads(self, self.attn_norm(h))  # (B, H, L, D), (B, H_kv, L, D) x 2
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, start, k, v)  # (B, H_kv, T, D): every cached position
        a = attend(q, k, v, mask, causal)  # (B, H, L, D)
        h = h + self.attn_out(a.transpose(1, 2).reshape(B, L, -1))
        x = self.ff_norm(h)
        gate, up = self.gate_up_proj(x) if hasattr(self, "gate_up_proj") else \
            (self.ff_proj(x), self.up_proj(x))
        return h + self.ff_out(F.silu(gate) * up)


class LLaDAModelLM(nn.Module, Configurable):
    """LLaDA with the checkpoint's tensor names (model.transformer.*)."""

    # the model interface's traits (models/interface.py)
    logits_shift = 0  # logits at i come from hidden state i (Dream's come from i - 1)
    prefix_lm = False
    greedy_first_token = False
    system_prompt: str | None = None
    cuda_graphs = True
    decoding_defaults = NO_DEFAULTS

    def __init__(self, cfg: LLaDAConfig):
        super().__init__()
        self.config = cfg
        transformer = nn.ModuleDict({
            "wte": nn.Embedding(cfg.embedding_size, cfg.d_model),
            "blocks": nn.ModuleList(LLaDABlock(cfg) for _ in range(cfg.n_layers)),
            "ln_f": RMSNorm(cfg.d_model, cfg.rms_norm_eps),
        })
        if not cfg.weight_tying:
            transformer["ff_out"] = nn.Linear(cfg.d_model, cfg.embedding_size, bias=False)
        self.model = nn.Module()
        self.model.transformer = transformer
        # plain attributes, not buffers: module.to(dtype) must not round them
        self.rope_cos = self.rope_sin = torch.empty(0)

    def _rope(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin (B, 1, L, D) in float32 for the given positions."""
        if self.rope_cos.device != position_ids.device or not self.rope_cos.numel():
            self._build_rope(position_ids.device)
        return self.rope_cos[position_ids][:, None], self.rope_sin[position_ids][:, None]

    def _build_rope(self, device: torch.device):
        cfg = self.config
        inv_freq = 1.0 / cfg.rope_theta ** (
            torch.arange(0, cfg.head_dim, 2, dtype=torch.float32, device=device) / cfg.head_dim
        )
        pos = torch.arange(cfg.max_sequence_length, dtype=torch.float32, device=device)
        freqs = torch.outer(pos, inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)  # (T_max, D): rotate-half layout
        self.rope_cos, self.rope_sin = angles.cos(), angles.sin()

    # read from the final norm: the embedding table may be quantized (models/quant.py)
    @property
    def device(self) -> torch.device:
        return self.model.transformer.ln_f.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.transformer.ln_f.weight.dtype

    def fuse(self) -> "LLaDAModelLM":
        """Fuse each block's projections that read one input (for inference: training keeps
        them apart). The state dict, and so the checkpoint, is unchanged."""
        for block in self.model.transformer["blocks"]:
            block.fuse()
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.model.transformer.wte

    def set_input_embeddings(self, table: nn.Module):
        """Swap the token embedding (a QuantizedEmbedding, models/quant.py)."""
        self.model.transformer.wte = table

    def blocks(self) -> nn.ModuleList:
        """The transformer blocks (what weight-only quantization rewrites, models/quant.py)."""
        return self.model.transformer["blocks"]

    def output_head(self) -> nn.Linear | None:
        """The output head, None when it is the input embedding (weight_tying)."""
        return None if self.config.weight_tying else self.model.transformer["ff_out"]

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

        position_ids:   (B, L) rotary positions; default cache_start + arange(L)
        attention_mask: (B, T_keys) bool, True for keys that may be attended (padding False),
                        or (B, L, T_keys), per fed position (a prefix LM's prompt); or the
                        same as additive floats; T_keys is L without a cache, else cache.length
        cache:          K/V of the fed positions is written into it, and attention runs over
                        all its positions (the others keep what the last forward wrote)
        logits_slice:   positions (within the L fed) whose logits are wanted
        logits_index:   (B, L') the same, per row (rows at different blocks); overrides the slice
        causal:         causal attention, for checking against autoregressive references
        inputs_embeds:  (B, L, d) input vectors used instead of wte(input_ids), e.g. with
                        image features at a vision-language prompt's image positions
        """
        B, L = input_ids.shape
        if causal and (cache is not None or attention_mask is not None):
            raise ValueError("causal attention is for reference checks: no cache, no mask")
        if position_ids is None:
            position_ids = torch.arange(cache_start, cache_start + L, device=input_ids.device)
            position_ids = position_ids.expand(B, L)
        cos, sin = self._rope(position_ids)  # (B, 1, L, D)
        mask = sdpa_mask(attention_mask)
        t = self.model.transformer
        h = t.wte(input_ids) if inputs_embeds is None else inputs_embeds  # (B, L, d)
        for i, block in enumerate(t.blocks):
            h = block(h, cos, sin, mask, cache, i, cache_start, causal)
        if logits_index is not None:
            h = h.gather(1, logits_index[..., None].expand(-1, -1, h.shape[-1]))  # (B, L', d)
        elif logits_slice is not None:
            h = h[:, logits_slice]
        h = t.ln_f(h)
        head = t.wte.weight if self.config.weight_tying else t.ff_out.weight
        return F.linear(h, head)

