"""The native Dream against transformers' Qwen2, its shift, its caches, decodes and files."""

import json

import pytest
import torch
from reference import config, ref_attention, ref_rope, reference_decode
from tolerance import TINY, assert_f32_close
from transformers import Qwen2Config, Qwen2ForCausalLM

import stdec
from stdec.api import resolve_model_path
from stdec.decoding.config import CACHE_MODES
from stdec.decoding.engine import decode
from stdec.errors import StdecError
from stdec.models import DreamConfig, DreamModel, LLaDAModelLM, load_model, save_model
from stdec.models.presets import PRESETS, resolve_model
from stdec.testing import random_dream_model, tiny_dream_config


@pytest.fixture
def dream():
    return random_dream_model(tiny_dream_config(), peak=16.0)


def to_qwen2(model: DreamModel) -> Qwen2ForCausalLM:
    c = model.config
    qwen = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, max_position_embeddings=c.max_position_embeddings,
        rope_theta=c.rope_theta, rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=False,
        attn_implementation="eager",
    ))
    qwen.load_state_dict(model.state_dict(), strict=True)  # Dream keeps Qwen2's tensor names
    return qwen.eval()


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_causal_dream_matches_transformers_qwen2(kv_heads):
    """Causal and with its shift undone, Dream is Qwen2: ours[:, i] = theirs[:, i - 1]."""
    model = random_dream_model(tiny_dream_config(num_key_value_heads=kv_heads), peak=1.0)
    ids = torch.randint(0, 300, (2, 23))
    with torch.no_grad():
        ours = model(ids, causal=True)
        theirs = to_qwen2(model)(ids).logits
    assert ours.shape == theirs.shape == (2, 23, 300)
    torch.testing.assert_close(ours[:, 1:], theirs[:, :-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], atol=1e-4, rtol=0)
    assert not torch.allclose(model(ids), ours, atol=1e-3)  # bidirectional differs


@torch.no_grad()
def test_logits_shift_is_applied_exactly_once(dream):
    assert DreamModel.logits_shift == 1 and LLaDAModelLM.logits_shift == 0
    ids = torch.randint(3, 300, (2, 19))
    shifted = dream(ids)
    dream.logits_shift = 0  # the same forward without the shift
    plain = dream(ids)
    del dream.logits_shift
    assert torch.equal(shifted[:, 1:], plain[:, :-1])
    assert torch.equal(shifted[:, 0], plain[:, 0])
    # the shift happens over the fed span, before logits_slice
    for rows in [slice(5, 13), slice(0, 4), slice(1, None), slice(0, 1), slice(None, None, 2)]:
        torch.testing.assert_close(dream(ids, logits_slice=rows), shifted[:, rows],
                                   atol=1e-4, rtol=0)  # logits ~ 50: matmul shape noise


def test_padding_and_positions_make_rows_independent(dream):
    ids = torch.randint(3, 300, (1, 9))
    alone = dream(ids)
    padded = torch.cat([torch.full((1, 4), 1), ids], dim=1)
    pos = (torch.arange(13) - 4).clamp(min=0)[None]
    keys = (torch.arange(13) >= 4)[None]
    batched = dream(padded, position_ids=pos, attention_mask=keys, logits_slice=slice(5, 13))
    assert_f32_close(batched, alone[:, 1:], **TINY)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cached_logits_equal_uncached_after_refresh(dream, mode):
    """A cached step feeds one extra position on the left (s - 1), as the loop does."""
    ids = torch.randint(3, 300, (3, 40))
    s, e = 16, 24
    full = dream(ids)
    cache = dream.new_cache(3, 40)
    assert_f32_close(dream(ids, cache=cache), full, **TINY)
    end = 40 if mode == "prefix" else e
    step = dream(ids[:, s - 1 : end], cache=cache, cache_start=s - 1,
                 logits_slice=slice(1, 1 + e - s))
    assert_f32_close(step, full[:, s:e], **TINY)


# ---- a plain reference: one row, Python loops, explicit K/V, the shift done by hand ----

def ref_forward(model: DreamModel, ids: list[int], a: int, b: int, frozen):
    """Unshifted logits of positions a..b fed alone (row j from hidden state a + j); K/V
    outside a..b come from `frozen` (the refresh)."""
    m, c = model.model, model.config
    hd = c.head_dim
    rope = ref_rope(hd, c.rope_theta, a, b)

    h = m.embed_tokens(torch.tensor([ids[a:b]]))
    kv = []
    for i, layer in enumerate(m.layers):
        att = layer.self_attn
        x = layer.input_layernorm(h)
        q, k, v = (p(x).view(1, b - a, -1, hd).transpose(1, 2) for p in
                   (att.q_proj, att.k_proj, att.v_proj))
        q, k = rope(q), rope(k)
        h = h + att.o_proj(ref_attention(q, k, v, frozen and frozen[i], a, b, kv))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return model.lm_head(m.norm(h))[0], kv


@pytest.mark.parametrize("cache", CACHE_MODES)
def test_decode_matches_reference_loop(dream, cache):
    cfg = config("threshold", cache, stop_at_eos=False)
    prompt = [5, 9, 33, 7, 101, 54, 8]
    ids, nfe = reference_decode(dream, prompt, cfg, ref_forward, shift=1)
    out = decode(dream, [prompt], cfg)
    assert out.ids[0].tolist() == ids
    assert out.stats[0].nfe == nfe
    assert nfe < cfg.gen_length  # the rule committed several tokens in some steps


@pytest.mark.parametrize("policy", ["threshold", "stdec"])
@pytest.mark.parametrize("cache", CACHE_MODES)
def test_rows_decode_as_they_do_alone(dream, policy, cache):
    prompts = [[5, 9, 33], [7, 101, 54, 8, 12, 40, 41], [77], [60, 61, 62, 63, 64]]
    cfg = config(policy, cache)
    together = decode(dream, prompts, cfg)
    for row, prompt in enumerate(prompts):
        alone = decode(dream, [prompt], cfg)
        assert together.ids[row].tolist() == alone.ids[0].tolist()
        assert together.stats[row].nfe == alone.stats[0].nfe


# ---- files, config, presets ----

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shard", [None, 20_000])
def test_save_load_round_trip(tmp_path, dream, dtype, shard):
    model = dream.to(dtype)
    save_model(model, tmp_path, max_shard_bytes=shard)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "Dream" and raw["architectures"] == ["DreamModel"]
    loaded = load_model(tmp_path, dtype=dtype, device="cpu")
    assert isinstance(loaded, DreamModel) and loaded.dtype == dtype
    ids = torch.randint(3, 300, (2, 17))
    assert torch.equal(loaded(ids), model(ids))


def test_tied_round_trip_has_no_lm_head(tmp_path):
    model = random_dream_model(tiny_dream_config(tie_word_embeddings=True))
    save_model(model, tmp_path)
    loaded = stdec.load_model(tmp_path, device="cpu")
    assert "lm_head.weight" not in loaded.state_dict()
    ids = torch.randint(3, 300, (1, 11))
    assert torch.equal(loaded(ids), model(ids))


def test_config_reads_dream_json():
    raw = {"architectures": ["DreamModel"], "model_type": "Dream", "auto_map": {}, "hidden_act":
           "silu", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
           "max_position_embeddings": 131072, "rope_theta": 1e6, "rms_norm_eps": 1e-6,
           "rope_scaling": None, "sliding_window": None, "use_sliding_window": False,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16", "mask_token_id": 151666,
           "pad_token_id": 151643, "eos_token_id": 151643, "bos_token_id": 151643}
    c = DreamConfig.from_dict(raw)
    assert (c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim) == (28, 28, 4, 128)
    assert c.max_sequence_length == 131072 and c.mask_token_id == 151666
    assert DreamConfig.from_dict(c.to_dict()) == c
    with pytest.raises(StdecError, match="rope_scaling"):
        DreamConfig.from_dict({**raw, "rope_scaling": {"type": "yarn", "factor": 4.0}})
    with pytest.raises(StdecError, match="mask_token_id must be in"):
        tiny_dream_config(mask_token_id=300)


def test_presets_and_resolve_model(tmp_path, monkeypatch):
    assert PRESETS["Dream-org/Dream-v0-Instruct-7B"].eos_token_ids == (151643,)
    assert PRESETS["GSAI-ML/LLaDA-8B-Instruct"].mask_token_id == 126336
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_model(str(tmp_path)) == tmp_path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for resolve in (resolve_model, resolve_model_path):
        with pytest.raises(StdecError, match="not in the local Hugging Face cache") as err:
            resolve("stdec-test-nobody/no-such-model")
        assert "\n" not in str(err.value) and err.value.__suppress_context__
