"""dkv: dKV-Cache's delayed caching. A token's K/V is written at the forward after its
commit and read from the cache from then on; masks are recomputed every step; a full
forward refreshes everything every dkv_interval steps of a block."""

from dataclasses import replace

import pytest
import torch
from reference import own
from tolerance import TINY, assert_f32_close

from stdec.decoding.config import DecodeConfig
from stdec.decoding.engine import Engine, decode
from stdec.testing import random_dream_model, random_model, tiny_config, tiny_dream_config

MODELS = {
    "llada": lambda: random_model(tiny_config(), peak=16.0),
    "dream": lambda: random_dream_model(tiny_dream_config(), peak=16.0),
}
# one token a step, so that a block holds tokens of every age; no refresh inside the block
ONE_A_STEP = DecodeConfig(policy="fixed", cache="dkv", gen_length=16, block_length=8,
                          steps=16, dkv_interval=8, stop_at_eos=False)


def stepped(model, n: int):
    engine = Engine(model, max_batch=2, max_length=32)
    r = engine.submit([5, 9, 33, 7], ONE_A_STEP)
    for _ in range(n):
        engine.step()
    return engine, r


@pytest.mark.parametrize("arch", MODELS)
def test_nothing_committed_since_a_refresh_gives_uncached_logits(arch):
    model = MODELS[arch]()
    engine, r = stepped(model, 4)  # four tokens of the block decoded, at forwards 1..4
    with torch.inference_mode():
        full = engine.runner.forward("full", [r])  # a refresh: every K/V from the current sequence
        dkv = engine.runner.forward("dkv", [r])
    assert_f32_close(dkv, full, **TINY)


@pytest.mark.parametrize("arch", MODELS)
def test_tokens_older_than_one_forward_are_read_from_the_cache(arch):
    model = MODELS[arch]()
    engine, r = stepped(model, 4)
    P = len(r.prompt)
    block = engine.seqs.x[r.slot, r.block : r.block + 8]
    committed = engine.seqs.trace_step[r.slot, r.block - P : r.block - P + 8]
    assert (block != model.config.mask_token_id).sum() == 4
    assert (committed == r.nfe).sum() == 1  # the newest: fed once more
    old = torch.nonzero((committed >= 1) & (committed < r.nfe))[:, 0] + r.block
    new = torch.nonzero(committed == r.nfe)[:, 0] + r.block
    cache = engine.runner.cache
    saved = [(k.clone(), v.clone()) for k, v in zip(cache.k, cache.v, strict=True)]
    k0 = cache.k[-1][r.slot].clone()  # (H_kv, T, D); layer 0 sees no context
    with torch.inference_mode():
        prefix = engine.runner.forward("prefix", [r])  # recomputes every block position
        k_prefix = cache.k[-1][r.slot].clone()
        for layer, (k, v) in enumerate(saved):  # back to the cache before that forward
            cache.k[layer].copy_(k)
            cache.v[layer].copy_(v)
        dkv = engine.runner.forward("dkv", [r])
    k_dkv = cache.k[-1][r.slot]
    torch.testing.assert_close(k_dkv[:, old], k0[:, old], atol=0, rtol=0)  # kept
    torch.testing.assert_close(k_dkv[:, new], k_prefix[:, new], atol=1e-6, rtol=0)  # written
    suffix = torch.arange(r.block + 8, r.length)  # masks after the block: fed and written
    torch.testing.assert_close(k_dkv[:, suffix], k_prefix[:, suffix], atol=1e-6, rtol=0)
    assert not torch.allclose(k0[:, suffix], k_prefix[:, suffix], atol=1e-4)
    assert not torch.equal(k_prefix[:, old], k0[:, old])  # so keeping them is a choice
    assert not torch.allclose(dkv, prefix, atol=1e-5)


def test_refresh_every_step_is_the_uncached_decode():
    model = MODELS["llada"]()
    prompts = [[5, 9, 33], [7, 101, 54, 8]]
    for policy in ("stdec", "threshold", "eb"):
        cfg = DecodeConfig(**own(policy, policy=policy, cache="dkv", gen_length=24,
                                 block_length=8, dkv_interval=1, tau=0.6))
        every = decode(model, prompts, cfg)
        none = decode(model, prompts, replace(cfg, cache="none"))
        assert torch.equal(every.ids, none.ids)
        assert [s.nfe for s in every.stats] == [s.nfe for s in none.stats]


@pytest.mark.parametrize("arch", MODELS)
def test_dkv_decodes_a_row_as_alone_whatever_else_is_in_the_batch(arch):
    model = MODELS[arch]()
    prompts = [[5, 9, 33], [7, 101, 54, 8, 9, 10], [77], [40, 41]]
    base = dict(cache="dkv", gen_length=24, block_length=8, trace=True, tau=0.6, tau_high=0.7,
                tau_low=0.45, dkv_interval=3)
    cfgs = [DecodeConfig(**own(p, policy=p, **base)) for p in ("stdec", "wino", "klass", "credit")]
    alone = [decode(model, [p], c) for p, c in zip(prompts, cfgs, strict=True)]
    together = decode(model, prompts, cfgs)
    for i, a in enumerate(alone):
        assert together.ids[i].tolist() == a.ids[0].tolist()
        assert together.stats[i].nfe == a.stats[0].nfe
        assert together.trace.step[i].tolist() == a.trace.step[0].tolist()
