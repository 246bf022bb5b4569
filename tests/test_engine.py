"""The continuous-batching engine: a request decodes as it does alone, whatever is in flight."""

import dataclasses
import random
from dataclasses import replace

import pytest
import torch
from reference import config
from scripted import Scripted, peaked

from stdec.decoding import policies, registry
from stdec.decoding.config import CACHE_MODES, POLICY_NAMES, DecodeConfig
from stdec.decoding.engine import Engine, decode
from stdec.errors import StdecError
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


def with_function(name, function):
    """The registry entry of rule `name` with another function in its place."""
    return dataclasses.replace(registry.get(name), function=function)


def test_an_error_in_one_row_fails_that_request_alone(monkeypatch):
    rule = policies.threshold

    def flaky(conf, pred, state, cfg):
        if cfg.tau == 0.55:
            raise RuntimeError("boom")
        return rule(conf, pred, state, cfg)

    monkeypatch.setitem(registry.RULES, "threshold", with_function("threshold", flaky))
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
    assert counts == sorted(counts) and counts[-1] == 24 and len(seen) > 2 and counts[0] < 24
    for committed, tokens in seen:  # the prefix never changes once committed
        assert tokens[:committed] == r.ids[:committed]
    assert torch.equal(torch.tensor(r.steps) > 0, torch.ones(24, dtype=torch.bool))


def one_running_one_waiting():
    """An engine with one slot, after one step: one request in it, one queued."""
    engine = Engine(MODELS["llada"](), max_batch=1, max_length=64)
    running = engine.submit([5, 6], config("fixed"))
    waiting = engine.submit([7, 8], config("fixed"))
    engine.step()
    return engine, running, waiting


def test_cancel_all_ends_every_request_with_the_reason():
    engine, running, waiting = one_running_one_waiting()
    engine.cancel_all("the server is shutting down")
    for r in (running, waiting):
        assert r.state == "cancelled" and r.error == "the server is shutting down"
    assert engine.active == 0 and not engine.has_work


def test_a_cancelled_request_says_so():
    model = MODELS["llada"]()
    engine = Engine(model, max_batch=1, max_length=64)
    r = engine.submit([5, 6], config("fixed", steps=24))
    engine.step()
    r.cancel()
    engine.step()
    assert r.state == "cancelled" and r.error == "the request was cancelled"


def test_a_freed_slot_takes_the_next_request_while_the_others_run():
    model = MODELS["llada"]()
    engine = Engine(model, max_batch=2, max_length=64)
    slow = engine.submit([5, 6], config("fixed", steps=24))  # slot 0, one token a step
    quick = engine.submit([7, 8], config("fixed", steps=3))  # slot 1, 8 tokens a step
    late = engine.submit([9, 10], config("fixed", steps=3))
    while quick.state != "done":
        engine.step()
    engine.step()
    assert slow.state == "running" and late.state == "running" and late.slot == 1


class Spy:
    """A model that counts its forwards and fails one whose input holds the poison id."""

    prefix_lm, greedy_first_token, cuda_graphs = False, False, True  # the interface's traits

    def __init__(self, inner, poison: int | None = None):
        self.inner, self.poison, self.calls = inner, poison, 0
        self.config, self.device, self.logits_shift = inner.config, inner.device, 0

    def new_cache(self, *args):
        return self.inner.new_cache(*args)

    def __call__(self, ids, **kw):
        self.calls += 1
        if self.poison is not None and (ids == self.poison).any():
            raise RuntimeError("poisoned input")
        return self.inner(ids, **kw)


@pytest.mark.parametrize("n_good", [1, 2])
def test_a_forward_that_fails_for_one_row_fails_that_row_alone(n_good):
    inner = MODELS["llada"]()
    model = Spy(inner, poison=250)
    engine = Engine(model, max_batch=3, max_length=64)
    prompts = [[5, 6, 7], [8, 9], [11, 12, 13, 14]][:n_good]
    bad = engine.submit([5, 250, 7], config("threshold"))  # first: the row at fault leads
    good = [engine.submit(p, config("threshold")) for p in prompts]
    engine.run()
    assert bad.state == "failed"
    assert bad.error == "decoding failed: RuntimeError: poisoned input"
    # the first step's batched forward failed: every row ran again alone, once
    assert engine.counters["rerun_alone"] == n_good + 1
    assert engine.counters["forwards"] == model.calls
    for r, p in zip(good, prompts, strict=True):
        assert r.state == "done"
        assert r.ids == decode(inner, [p], config("threshold")).ids[0].tolist()


def test_a_rule_that_fails_for_one_row_of_a_shared_config_fails_that_row_alone(monkeypatch):
    rule = policies.threshold

    def picky(conf, pred, state, cfg):  # fails whenever the row with a 5-token prompt is there
        if (state.block_start == 5).any():
            raise RuntimeError("picky")
        return rule(conf, pred, state, cfg)

    monkeypatch.setitem(registry.RULES, "threshold", with_function("threshold", picky))
    model = MODELS["llada"]()
    engine = Engine(model, max_batch=3, max_length=64)
    good = [engine.submit(p, config("threshold")) for p in ([5, 6, 7], [8, 9, 10])]
    bad = engine.submit([5, 6, 7, 8, 9], config("threshold"))
    engine.run()
    assert bad.state == "failed" and bad.error == "decoding failed: RuntimeError: picky"
    monkeypatch.setitem(registry.RULES, "threshold", with_function("threshold", rule))
    for r in good:
        assert r.state == "done"
        assert r.ids == decode(model, [r.prompt], config("threshold")).ids[0].tolist()


def test_counters_and_stats_add_up():
    model = MODELS["llada"]()
    engine = Engine(model, max_batch=2, max_length=64)
    reqs = [engine.submit(p, config("threshold", "dual")) for p in ([5, 6], [7, 8, 9], [10])]
    steps = 0
    while engine.step():
        steps += 1
    assert engine.counters["steps"] == steps > 0
    stats = [r.stats for r in reqs]
    assert engine.counters["gen_tokens"] == sum(s.gen_tokens for s in stats) > 0
    assert engine.counters["nfe"] == sum(s.nfe for s in stats)
    assert engine.counters["steps"] <= engine.counters["forwards"] <= engine.counters["nfe"]
    assert engine.counters["rerun_alone"] == 0
    assert all(0 < r.t_admit < r.t_first for r in reqs)
    for s in stats:
        assert s.tokens_per_s == pytest.approx(s.gen_tokens / s.wall_time)
        assert s.tpf == pytest.approx(s.gen_tokens / s.nfe)


def test_klass_rows_of_different_block_lengths_decode_as_alone():
    model = MODELS["llada"]()
    reqs = [([5, 6], replace(config("klass"), gen_length=16, block_length=8)),
            ([7, 8, 9], replace(config("klass"), gen_length=16, block_length=16)),
            ([10], replace(config("klass", "dual"), gen_length=8, block_length=4))]
    alone = [decode(model, [p], c).ids[0].tolist() for p, c in reqs]
    engine = Engine(model, max_batch=3, max_length=64)
    first = engine.submit(*reqs[0])
    engine.step()  # the 8-wide row is mid-block when the 16-wide one arrives
    rest = [engine.submit(*r) for r in reqs[1:]]
    engine.run()
    assert [r.ids for r in [first, *rest]] == alone


# ---- scripted models: which step commits what is written out by hand ----

def traced(script, gen: int, **kw):
    cfg = DecodeConfig(gen_length=gen, block_length=gen, trace=True, stop_at_eos=False, **kw)
    return decode(Scripted(script), [[3, 4]], cfg)


def test_the_first_generated_position_may_be_committed_last():
    # confidence rises to the right: fixed (one a step) commits right to left
    out = traced(lambda n: peaked([5, 6, 7, 8], [0.3, 0.4, 0.5, 0.6]), 4, policy="fixed",
                 steps=4)
    assert out.trace.step[0].tolist() == [4, 3, 2, 1]
    assert out.ids[0].tolist() == [5, 6, 7, 8]


def test_fixed_follows_its_uneven_schedule_through_the_engine():
    out = traced(lambda n: peaked([5, 6, 7, 8, 9, 10], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), 6,
                 policy="fixed", steps=4)  # 6 tokens in 4 steps: 2, 2, 1, 1
    assert out.trace.step[0].tolist() == [1, 1, 2, 2, 3, 4]


def test_stdec_relaxes_a_prediction_once_it_held_for_the_window():
    def script(n):  # p1 holds 4 at 0.85; p2 (0.87) flips between 5 and 6, never stable
        return peaked([7, 4, 5 + n % 2, 9], [0.95, 0.85, 0.87, 0.1])

    out = traced(script, 4, policy="stdec", tau_high=0.9, tau_low=0.9, rho=0.9, window=3)
    # step 1: p0 (0.95); step 2: nothing passes 0.9, the most confident (p2) goes; step 3:
    # p1 has held 3 steps, its threshold is 0.81; step 4: p3, the last one
    assert out.trace.step[0].tolist() == [1, 3, 2, 4]


def test_a_draft_wino_takes_back_is_uncommitted_in_the_live_trace():
    def script(n):  # as in test_rules: the second forward doubts p1's draft
        if n == 0:
            return peaked([3, 4, 5, 6], [0.7, 0.65, 0.3, 0.2])
        if n == 1:
            return peaked([3, 4, 5, 6], [0.95, 0.7, 0.8, 0.65])
        return peaked([3, 4, 5, 6], [0.95, 0.95, 0.5, 0.95])

    cfg = DecodeConfig(policy="wino", wino_draft=0.6, wino_verify=0.9, gen_length=4,
                       block_length=4, stop_at_eos=False)
    engine = Engine(Scripted(script), max_batch=1, max_length=8)
    seen = []
    engine.submit([3, 4], cfg, progress=True,
                  listener=lambda r: seen.append((list(r.tokens), list(r.steps))))
    engine.run()
    assert seen[0] == ([3, 4, 2, 2], [1, 1, -1, -1])
    assert seen[1] == ([3, 2, 5, 6], [1, -1, 2, 2])  # p1 masked again, out of the trace
    assert seen[-1] == ([3, 4, 5, 6], [1, 3, 2, 2])


def test_a_request_cancelled_while_waiting_never_takes_a_slot():
    engine, first, queued = one_running_one_waiting()
    queued.cancel()
    engine.run()
    assert queued.state == "cancelled" and queued.nfe == 0 and queued.stats is None
    assert first.state == "done"


def test_every_free_slot_is_filled_in_one_step():
    model = MODELS["llada"]()
    engine = Engine(model, max_batch=3, max_length=64)
    reqs = [engine.submit(p, config("fixed")) for p in ([5, 6], [7, 8], [9, 10])]
    engine.step()
    assert [r.state for r in reqs] == ["running"] * 3 and [r.nfe for r in reqs] == [1, 1, 1]



def test_rows_at_different_blocks_share_one_forward_per_cache_mode():
    inner = MODELS["llada"]()
    model = Spy(inner)
    engine = Engine(model, max_batch=4, max_length=64)
    short = DecodeConfig(policy="fixed", gen_length=8, block_length=4, steps=4)
    late = engine.submit([5, 6, 7], short)
    engine.step()
    engine.step()  # `late` is in its second block now
    mixed = [engine.submit([8, 9], config("fixed", "none")),
             engine.submit([10, 11, 12, 13], replace(short, block_length=8, steps=1))]
    before = model.calls
    engine.step()  # three rows, three blocks, two block lengths: still one full forward
    assert model.calls - before == 1
    engine.run()
    assert [r.state for r in (late, *mixed)] == ["done"] * 3


def test_decode_sizes_its_engine_to_the_longest_row(monkeypatch):
    # not the model's max_sequence_length: a batch of short rows allocates short rows
    model = MODELS["llada"]()
    sizes = []
    real = Engine.__init__

    def spy(self, model, **kw):
        sizes.append((kw["max_batch"], kw["max_length"]))
        real(self, model, **kw)

    monkeypatch.setattr(Engine, "__init__", spy)
    cfg = config("threshold", "prefix")
    decode(model, [[5, 6], [7, 8, 9, 10, 11]], cfg)
    assert sizes == [(2, 5 + cfg.gen_length)]
    assert 5 + cfg.gen_length < model.config.max_sequence_length


def test_decode_feeds_every_prompt_through_one_run_and_refills_freed_slots(monkeypatch):
    # a slow row (one token a step) and quick ones (8 a step) over 2 slots: the quick ones
    # take turns in the second slot while the slow one runs; static chunks of 2 would take
    # 24 + 3 steps, one run takes the slow row's 24
    model = MODELS["llada"]()
    engines = []
    real = Engine.__init__

    def spy(self, model, **kw):
        engines.append((self, kw["max_batch"], kw["max_length"]))
        real(self, model, **kw)

    prompts = [[5, 6], [7, 8, 9], [10], [11, 12, 13, 14, 15]]
    cfgs = [config("fixed", steps=24, stop_at_eos=False)] + \
        [config("fixed", steps=3, stop_at_eos=False)] * 3
    alone = [decode(model, [p], c) for p, c in zip(prompts, cfgs, strict=True)]
    monkeypatch.setattr(Engine, "__init__", spy)
    finished = []
    out = decode(model, prompts, cfgs, max_batch=2,
                 on_finish=lambda i, r: finished.append((i, r.stats.nfe)))
    [(engine, slots, length)] = engines
    assert (slots, length) == (2, 5 + 24)
    assert engine.counters["steps"] == 24
    assert finished == [(1, 3), (2, 3), (3, 3), (0, 24)]
    assert out.ids.tolist() == [a.ids[0].tolist() for a in alone]
    assert [s.nfe for s in out.stats] == [a.stats[0].nfe for a in alone]


def test_an_on_finish_error_surfaces_once_the_run_is_over():
    model = MODELS["llada"]()

    def boom(i, r):
        raise ValueError(f"progress bar broke at {i}")

    with pytest.raises(ValueError, match="progress bar broke at"):
        decode(model, [[5, 6], [7, 8]], config("threshold"), max_batch=1, on_finish=boom)
    with pytest.raises(StdecError, match="max_batch must be a positive integer"):
        decode(model, [[5, 6]], config("threshold"), max_batch=0)
