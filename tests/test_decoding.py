"""The decoding loop against a plain reference loop, across batches, and on scripted models."""

from dataclasses import replace

import pytest
import torch
from reference import MASK, config, ref_attention, ref_rope, reference_decode

from stdec.decoding import registry
from stdec.decoding.config import CACHE_MODES, POLICY_NAMES, DecodeConfig
from stdec.decoding.engine import decode
from stdec.errors import StdecError
from stdec.testing import tiny_config

# ---- a plain reference: one row, Python loops, attention written out with explicit K/V ----

def ref_forward(model, ids: list[int], a: int, b: int, frozen):
    """Logits of positions a..b fed alone; K/V outside a..b come from `frozen` (the refresh)."""
    t, c = model.model.transformer, model.config
    hd = c.head_dim
    rope = ref_rope(hd, c.rope_theta, a, b)

    h = t.wte(torch.tensor([ids[a:b]]))
    kv = []
    for i, blk in enumerate(t.blocks):
        x = blk.attn_norm(h)
        q, k, v = (p(x).view(1, b - a, -1, hd).transpose(1, 2) for p in
                   (blk.q_proj, blk.k_proj, blk.v_proj))
        q, k = rope(q), rope(k)
        att = ref_attention(q, k, v, frozen and frozen[i], a, b, kv)
        h = h + blk.attn_out(att)
        x = blk.ff_norm(h)
        h = h + blk.ff_out(torch.nn.functional.silu(blk.ff_proj(x)) * blk.up_proj(x))
    return (t.ff_out(t.ln_f(h)))[0], kv


@pytest.mark.parametrize("gen_length", [24, 21])  # 21: blocks of 8, 8 and 5
@pytest.mark.parametrize("cache", CACHE_MODES)
def test_decode_matches_reference_loop(tiny_model, cache, gen_length):
    cfg = config("threshold", cache, stop_at_eos=False, gen_length=gen_length)
    prompt = [5, 9, 33, 7, 101, 54, 8]
    ids, nfe = reference_decode(tiny_model, prompt, cfg, ref_forward)
    out = decode(tiny_model, [prompt], cfg)
    assert out.ids[0].tolist() == ids
    assert out.stats[0].nfe == nfe
    assert nfe < cfg.gen_length  # the rule committed several tokens in some steps


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("cache", CACHE_MODES)
def test_rows_decode_as_they_do_alone(tiny_model, policy, cache):
    prompts = [[5, 9, 33], [7, 101, 54, 8, 12, 40, 41], [77], [60, 61, 62, 63, 64]]
    cfg = config(policy, cache, **({"steps": 12} if policy == "fixed" else {}))
    assert_rows_decode_as_alone(tiny_model, prompts, cfg)


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("cache", CACHE_MODES)
def test_a_shorter_last_block_decodes_as_alone(tiny_model, policy, cache):
    # gen_length 21 over blocks of 8: the last block has 5 positions; rows at their last
    # block share forwards with rows at a whole one (prompts of different lengths)
    prompts = [[5, 9, 33], [7, 101, 54, 8, 12, 40, 41, 9, 10, 11, 12], [77]]
    cfg = config(policy, cache, gen_length=21, **({"k": 1} if policy == "fixed" else {}))
    out = assert_rows_decode_as_alone(tiny_model, prompts, cfg)
    assert out.ids.shape == (3, 21) and not (out.ids == MASK).any()


def assert_rows_decode_as_alone(model, prompts, cfg):
    together = decode(model, prompts, cfg)
    for row, prompt in enumerate(prompts):
        alone = decode(model, [prompt], cfg)
        assert together.ids[row].tolist() == alone.ids[0].tolist()
        assert together.stats[row].nfe == alone.stats[0].nfe
    return together


def test_trace_records_every_commit(tiny_model):
    out = decode(tiny_model, [[5, 6, 7]], config("stdec", "dual", trace=True, stop_at_eos=False))
    step = out.trace.step[0]
    assert (step >= 1).all() and step.max() == out.stats[0].nfe
    assert not out.trace.confidence.isnan().any()
    # blocks are decoded left to right
    blocks = step.view(-1, 8)
    assert (blocks[1:].min(dim=1).values > blocks[:-1].max(dim=1).values).all()


def test_fixed_follows_llada_even_schedule(tiny_model):
    # 8-token blocks in 3 steps: LLaDA commits 3, 3, 2
    out = decode(tiny_model, [[5, 6]], config("fixed", steps=9, trace=True, stop_at_eos=False))
    counts = torch.bincount(out.trace.step[0], minlength=10)[1:].tolist()
    assert counts == [3, 3, 2] * 3
    assert out.stats[0].nfe == 9


def test_sampling_is_seeded(tiny_model):
    cfg = config("threshold", temperature=1.0, seed=3)
    a, b = decode(tiny_model, [[5, 6]], cfg), decode(tiny_model, [[5, 6]], cfg)
    c = decode(tiny_model, [[5, 6]], replace(cfg, seed=4))
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)


# ---- scripted models: predictions and confidences set by hand ----

class Scripted(torch.nn.Module):
    """Ignores its input: step n (from 0) returns script(n) as logits for the fed block."""

    logits_shift = 0  # the model interface's traits (stdec/models/interface.py)
    prefix_lm = False
    greedy_first_token = False
    system_prompt = None
    cuda_graphs = True

    def __init__(self, script, vocab=16):
        super().__init__()
        self.config = tiny_config(vocab_size=vocab, mask_token_id=MASK, eos_token_id=1,
                                  pad_token_id=1)
        self.script, self.calls, self.vocab = script, 0, vocab
        self.w = torch.nn.Parameter(torch.zeros(1))

    device = property(lambda self: self.w.device)
    dtype = property(lambda self: self.w.dtype)

    def new_cache(self, batch, length):
        return None

    def forward(self, ids, *, logits_slice=None, **_):
        n = ids.shape[1] if logits_slice is None else len(range(ids.shape[1])[logits_slice])
        preds, confs = self.script(self.calls)
        self.calls += 1
        return logits_for(torch.tensor(preds)[None, :n], torch.tensor(confs)[None, :n], self.vocab)


def logits_for(pred, conf, vocab):
    """Logits whose softmax puts probability conf on pred, the rest spread evenly."""
    rest = (1 - conf) / (vocab - 2)  # the mask token gets no mass
    p = rest[..., None].expand(*pred.shape, vocab).clone()
    p.scatter_(-1, pred[..., None], conf[..., None])
    return p.log()


def test_temporal_relax_commits_stable_predictions():
    # p2 passes tau_high at once; p0 holds its prediction at 0.84 (>= rho * tau_high = 0.81),
    # so it is relaxed at its second step; p1 flips every step and is never relaxed
    script = lambda n: ([5, 6 + n % 2, 7, 8, 9], [0.84, 0.85, 0.95, 0.1, 0.1])  # noqa: E731
    cfg = DecodeConfig(policy="stdec", gen_length=5, block_length=5, tau_high=0.9,
                       tau_low=0.9, rho=0.9, window=2, trace=True, stop_at_eos=False)
    out = decode(Scripted(script), [[3, 4]], cfg)
    # p1 only by the at-least-one rule at step 3, then p3 and p4 one per step the same way
    assert out.trace.step[0].tolist() == [2, 3, 1, 4, 5]
    norelax = decode(Scripted(script), [[3, 4]], replace(cfg, rho=1.0))
    assert norelax.trace.step[0].tolist()[0] != 2


def test_eos_stop_fills_the_tail_and_keeps_the_text():
    # EOS (1) is predicted confidently at position 2; positions 0, 1 follow one per step
    script = lambda n: ([5, 6, 1, 7, 8, 9, 10, 11], [0.5, 0.4, 0.99, .1, .1, .1, .1, .1])  # noqa
    cfg = DecodeConfig(policy="threshold", gen_length=8, block_length=8, tau=0.9)
    stopped = decode(Scripted(script), [[3]], cfg)
    full = decode(Scripted(script), [[3]], replace(cfg, stop_at_eos=False))
    assert stopped.ids[0, :3].tolist() == full.ids[0, :3].tolist() == [5, 6, 1]
    assert stopped.ids[0, 3:].tolist() == [1] * 5
    assert stopped.stats[0].nfe == 3 and full.stats[0].nfe == 8
    assert stopped.stats[0].gen_tokens == full.stats[0].gen_tokens == 2


def test_confident_blocks_take_one_step_each():
    model = Scripted(lambda n: ([5] * 8, [0.95] * 8))
    out = decode(model, [[3]], DecodeConfig(policy="threshold", gen_length=16, block_length=8))
    assert out.ids[0].tolist() == [5] * 16
    assert (out.stats[0].nfe, out.stats[0].gen_tokens, out.stats[0].tpf) == (2, 16, 8.0)


@pytest.mark.parametrize("name", ["gen_length", "block_length", "steps", "klass_steps",
                                  "dkv_interval", "window"])
def test_a_bad_count_is_refused_by_its_own_name(name):
    owner = next((r.name for r in registry.RULES.values() if name in r.options), "stdec")
    with pytest.raises(StdecError, match=rf"^{name} must be a positive integer, got 0\.$"):
        DecodeConfig(**{name: 0, "policy": owner})


def test_steps_may_be_one_per_block():
    assert DecodeConfig(policy="fixed", gen_length=64, block_length=32, steps=2).steps == 2
    with pytest.raises(StdecError, match="steps \\(1\\) must be a multiple"):
        DecodeConfig(policy="fixed", gen_length=64, block_length=32, steps=1)


@pytest.mark.parametrize("options, nfe", [
    ({}, 21),  # one token a step
    ({"k": 2}, 4 + 4 + 3),  # whole blocks 8 / 2 steps; the last, 5 positions, ceil(5 / 2)
    ({"steps": 168 // 8}, 21),  # steps x 8 / 21 = 8 a whole block
])
def test_fixed_paces_a_shorter_last_block_as_the_whole_ones(tiny_model, options, nfe):
    cfg = DecodeConfig(policy="fixed", gen_length=21, block_length=8, stop_at_eos=False,
                       **options)
    assert decode(tiny_model, [[5, 9, 33]], cfg).stats[0].nfe == nfe


def test_fixed_steps_must_pace_every_block_wholly():
    assert DecodeConfig(policy="fixed", gen_length=20, block_length=8, steps=10).steps == 10
    with pytest.raises(StdecError, match=r"steps \(7\) must give a block of 8 a whole number"):
        DecodeConfig(policy="fixed", gen_length=20, block_length=8, steps=7)
