"""The native LLaDA against transformers' Llama, its caches against itself, and its files."""

import pytest
import torch
from tolerance import TINY, assert_f32_close
from transformers import LlamaConfig, LlamaForCausalLM

from stdec.models import load_model, save_model
from stdec.testing import random_model, tiny_config

# LLaDA tensor name (per block) -> transformers Llama name
BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm",
    "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj", "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
}


def to_llama(model) -> LlamaForCausalLM:
    c = model.config
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=c.embedding_size, hidden_size=c.d_model, intermediate_size=c.mlp_hidden_size,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, max_position_embeddings=c.max_sequence_length,
        rope_theta=c.rope_theta, rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, attn_implementation="eager",
    ))
    state = {}
    for name, t in model.state_dict().items():
        parts = name.split(".")  # model.transformer.blocks.{i}.{module}.weight
        if parts[2] == "blocks":
            state[f"model.layers.{parts[3]}.{BLOCK_NAMES[parts[4]]}.weight"] = t
        else:
            state[{"wte": "model.embed_tokens.weight", "ln_f": "model.norm.weight",
                   "ff_out": "lm_head.weight"}[parts[2]]] = t
    llama.load_state_dict(state, strict=True)
    return llama.eval()


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_causal_llada_matches_transformers_llama(kv_heads):
    model = random_model(tiny_config(n_kv_heads=kv_heads), peak=1.0)
    ids = torch.randint(0, 300, (2, 23))
    with torch.no_grad():
        ours = model(ids, causal=True)
        theirs = to_llama(model)(ids).logits
    assert ours.shape == (2, 23, 300)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    # bidirectional is the same code without the mask, so it must differ from causal
    assert not torch.allclose(model(ids), ours, atol=1e-3)


def test_padding_and_positions_make_rows_independent(tiny_model):
    """A left-padded row with shifted positions gives the logits it has alone."""
    ids = torch.randint(3, 300, (1, 9))
    alone = tiny_model(ids)
    padded = torch.cat([torch.full((1, 4), 1), ids], dim=1)
    pos = (torch.arange(13) - 4).clamp(min=0)[None]
    keys = (torch.arange(13) >= 4)[None]
    batched = tiny_model(padded, position_ids=pos, attention_mask=keys)
    assert_f32_close(batched[:, 4:], alone, **TINY)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cached_logits_equal_uncached_after_refresh(tiny_model, mode):
    ids = torch.randint(3, 300, (3, 40))
    s, e = 16, 24
    full = tiny_model(ids)
    cache = tiny_model.new_cache(3, 40)
    refreshed = tiny_model(ids, cache=cache)
    assert_f32_close(refreshed, full, **TINY)
    if mode == "prefix":
        step = tiny_model(ids[:, s:], cache=cache, cache_start=s, logits_slice=slice(0, e - s))
    else:
        step = tiny_model(ids[:, s:e], cache=cache, cache_start=s)
    assert_f32_close(step, full[:, s:e], **TINY)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shard", [None, 20_000])
def test_save_load_round_trip(tmp_path, tiny_model, dtype, shard):
    model = tiny_model.to(dtype)
    save_model(model, tmp_path, max_shard_bytes=shard)
    assert (tmp_path / "model.safetensors.index.json").exists() == bool(shard)
    loaded = load_model(tmp_path, dtype=dtype, device="cpu")
    ids = torch.randint(3, 300, (2, 17))
    assert loaded.dtype == dtype
    assert torch.equal(loaded(ids), model(ids))


def test_tied_weights_and_biases_round_trip(tmp_path):
    model = random_model(tiny_config(weight_tying=True, include_qkv_bias=True))
    save_model(model, tmp_path)
    loaded = load_model(tmp_path, device="cpu")
    assert "model.transformer.ff_out.weight" not in loaded.state_dict()
    ids = torch.randint(3, 300, (1, 11))
    assert torch.equal(loaded(ids), model(ids))


def test_corrupt_shard_index_is_one_sentence(tmp_path, tiny_model):
    from stdec.errors import StdecError

    save_model(tiny_model, tmp_path, max_shard_bytes=20_000)
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(StdecError, match="index.json' is corrupt"):
        load_model(tmp_path)
