"""The continuous-batching engine: a request decodes as it does alone, whatever is in flight."""

import random
from dataclasses import replace

import pytest
import torch
from reference import config

from stdec.decoding import policies
from stdec.decoding.config import CACHE_MODES, POLICY_NAMES
from stdec.decoding.engine import Engine, decode
from stdec.testing import random_dream_model, random_model, tiny_config, tiny_dream_config

MODELS = {
    "llada": lambda: random_model(tiny_config(), peak=16.0),
    "dream": lambda: random_dream_model(tiny_dream_config(), peak=16.0),
}


def mixed_requests(n: int, seed: int):
    """(prompt, config) pairs: mixed prompt lengths, gen lengths, block lengths, rules, caches."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(3, 290) for _ in range(rng.randrange(1, 12))]
        block = rng.choice([4, 8])
        cfg = config(rng.choice(POLICY_NAMES), rng.choice(CACHE_MODES),
                     stop_at_eos=rng.random() < 0.5)
        cfg = replace(cfg, gen_length=block * rng.randrange(1, 4), block_length=block)
        out.append((prompt, cfg))
    return out


@pytest.mark.parametrize("arch", MODELS)
def test_random_arrivals_decode_as_alone(arch):
    model = MODELS[arch]()
    requests = mixed_requests(10, seed=1)
    alone = [decode(model, [p], c) for p, c in requests]
    engine = Engine(model, max_batch=3, max_length=64)
    rng, pending, submitted = random.Random(2), list(requests), []
    while pending or engine.has_work:
        for _ in range(rng.choice([0, 0, 1, 2])):  # arrivals at random iterations
            if pending:
                submitted.append(engine.submit(*pending.pop(0)))
        engine.step()
    assert [r.state for r in submitted] == ["done"] * len(requests)
    for r, a in zip(submitted, alone, strict=True):
        assert r.ids == a.ids[0].tolist()
        assert r.stats.nfe == a.stats[0].nfe


def test_sampling_belongs_to_the_request():
    model = MODELS["llada"]()
    prompts = [[5, 9, 33], [7, 101, 54, 8], [77], [12, 13]]
    cfgs = [config("threshold", cache, temperature=1.0, seed=s)
            for cache, s in zip(CACHE_MODES, (3, 4, 5, 6), strict=True)]
    alone = [decode(model, [p], c).ids[0].tolist() for p, c in zip(prompts, cfgs, strict=True)]
    engine = Engine(model, max_batch=2, max_length=64)
    filler = engine.submit([40, 41], replace(cfgs[0], seed=9))  # takes slot 0 first
    reqs = [engine.submit(p, c) for p, c in zip(prompts[::-1], cfgs[::-1], strict=True)]
    engine.run()
    assert filler.state == "done"
    assert [r.ids for r in reqs[::-1]] == alone
    # one seed per row through decode(): the same as each alone
    together = decode(model, prompts, [replace(cfgs[0], seed=s) for s in (3, 4, 5, 6)])
    assert together.ids[0].tolist() == alone[0]


def test_cancel_frees_the_slot_within_one_step():
    model = MODELS["llada"]()
    engine = Engine(model, max_batch=1, max_length=64)
    first = engine.submit([5, 6], config("fixed", steps=24))
    second = engine.submit([7, 8], config("fixed", steps=24))
    engine.step()
    first.cancel()
    engine.step()
    assert first.state == "cancelled" and second.state == "running"
    engine.run()
    assert second.ids == decode(model, [[7, 8]], config("fixed", steps=24)).ids[0].tolist()


def test_timeout_and_too_long_fail_alone():
    model = MODELS["llada"]()
    engine = Engine(model, max_batch=2, max_length=30)
    late = engine.submit([5, 6], config("fixed"), deadline=0.0)
    long = engine.submit(list(range(3, 13)), config("fixed"))  # 10 + 24 > 30
    fine = engine.submit([5, 6], config("threshold"))
    engine.run()
    assert late.state == "failed" and "timed out" in late.error
    assert long.state == "failed" and "max length" in long.error
    assert fine.state == "done"


def test_an_error_in_one_row_fails_that_request_alone(monkeypatch):
    rule = policies.POLICIES["threshold"]

    def flaky(conf, pred, state, cfg):
        if cfg.tau == 0.55:
            raise RuntimeError("boom")
        return rule(conf, pred, state, cfg)

    monkeypatch.setitem(policies.POLICIES, "threshold", flaky)
    model = MODELS["llada"]()
    engine = Engine(model, max_batch=3, max_length=64)
    good = [engine.submit([5, 6, 7], config("threshold", cache)) for cache in ("none", "dual")]
    bad = engine.submit([5, 6, 7], replace(config("threshold"), tau=0.55))
    engine.run()
    assert bad.state == "failed" and "boom" in bad.error
    for r, cache in zip(good, ("none", "dual"), strict=True):
        assert r.ids == decode(model, [[5, 6, 7]], config("threshold", cache)).ids[0].tolist()


def test_listener_sees_the_committed_prefix_grow():
    model = MODELS["llada"]()
    engine = Engine(model, max_batch=2, max_length=64)
    seen = []
    r = engine.submit([5, 6], config("stdec", "prefix", stop_at_eos=False),
                      listener=lambda req: seen.append((req.committed, list(req.tokens))),
                      progress=True)
    engine.run()
    counts = [c for c, _ in seen]
    assert counts == sorted(counts) and counts[-1] == 24
    for committed, tokens in seen:  # the prefix never changes once committed
        assert tokens[:committed] == r.ids[:committed]
    assert torch.equal(torch.tensor(r.steps) > 0, torch.ones(24, dtype=torch.bool))
