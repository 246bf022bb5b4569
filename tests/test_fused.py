"""Load-time fusion (Q/K/V into one multiply, gate/up into another) changes no number: the
same logits, the same greedy decodes in every cache mode, the same checkpoint on disk."""

import copy

import pytest
import torch
from reference import config
from safetensors.torch import load_file

import stdec
from stdec.decoding.config import CACHE_MODES
from stdec.decoding.engine import decode
from stdec.models import load_model, save_model
from stdec.models.layers import FusedLinear
from stdec.testing import (
    random_dream_model,
    random_llava_model,
    random_model,
    tiny_config,
    tiny_dream_config,
    tiny_llava_config,
)

MODELS = {
    "llada": lambda: random_model(tiny_config(n_kv_heads=2), peak=16.0),
    "llada-bias": lambda: random_model(tiny_config(include_qkv_bias=True), peak=16.0),
    "dream": lambda: random_dream_model(tiny_dream_config(), peak=16.0),
}


@pytest.mark.parametrize("arch", MODELS)
@torch.no_grad()
def test_fused_logits_equal_the_plain_ones(arch):
    plain = MODELS[arch]()
    fused = copy.deepcopy(plain).fuse()
    assert any(isinstance(m, FusedLinear) for m in fused.modules())
    assert not any(isinstance(m, FusedLinear) for m in plain.modules())
    x = torch.randint(3, 250, (2, 24))
    torch.testing.assert_close(fused(x), plain(x), atol=1e-6, rtol=0)
    cache_p, cache_f = plain.new_cache(2, 24), fused.new_cache(2, 24)
    plain(x, cache=cache_p), fused(x, cache=cache_f)
    torch.testing.assert_close(fused(x[:, 8:16], cache=cache_f, cache_start=8),
                               plain(x[:, 8:16], cache=cache_p, cache_start=8), atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("cache", CACHE_MODES)
def test_fused_greedy_decodes_are_the_same(arch, cache):
    plain = MODELS[arch]()
    fused = copy.deepcopy(plain).fuse()
    prompts = [[5, 9, 33], [7, 101, 54, 8, 12]]
    for policy in ("threshold", "stdec"):
        cfg = config(policy, cache)
        assert torch.equal(decode(fused, prompts, cfg).ids, decode(plain, prompts, cfg).ids)


@pytest.mark.parametrize("arch", MODELS)
def test_a_fused_model_reads_and_writes_the_same_checkpoint(arch, tmp_path):
    plain = MODELS[arch]()
    save_model(plain, tmp_path / "plain")
    save_model(copy.deepcopy(plain).fuse(), tmp_path / "fused")
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("plain", "fused"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    again = load_model(tmp_path / "plain", device="cpu").fuse()
    fresh = MODELS[arch]().fuse()
    fresh.load_state_dict(plain.state_dict())  # the plain names load into fused blocks
    x = torch.randint(3, 250, (1, 12))
    with torch.no_grad():
        assert torch.equal(again(x), plain(x)) and torch.equal(fresh(x), plain(x))


def test_stdec_load_fuses_and_the_vision_model_fuses_its_language_model(checkpoint):
    model, _ = stdec.load(checkpoint, device="cpu")
    assert any(isinstance(m, FusedLinear) for m in model.modules())
    vl = random_llava_model(tiny_llava_config())
    ids = torch.tensor([[5, 9, 33, 2, 2]])
    with torch.no_grad():
        before = vl(ids)
        assert torch.equal(vl.fuse()(ids), before)
    keys = sorted(model.state_dict())
    assert model.fuse() is model and sorted(model.state_dict()) == keys  # twice is once
