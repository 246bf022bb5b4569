"""Edges: every rule's comparison with a value exactly on its boundary, and rule state that
starts clean in a reused slot and at every block.

Boundary values are exact in float32 (0.25, 0.375, 0.5, 0.75 ...), so that equality is
real; the float32 neighbour (torch.nextafter) on the wrong side of each boundary shows the
comparison is the one documented, strict or not.
"""

import math
from dataclasses import dataclass, replace

import pytest
import torch
from scripted import EOS, Scripted, peaked

from stdec.decoding import registry
from stdec.decoding.config import DecodeConfig
from stdec.decoding.engine import Engine, decode
from stdec.decoding.policies import StepState, select, stdec_thresholds
from stdec.testing import random_model, tiny_config


def below(x: float) -> float:
    """The float32 just below x."""
    return torch.nextafter(torch.tensor(x), torch.tensor(-math.inf)).item()


def above(x: float) -> float:
    """The float32 just above x."""
    return torch.nextafter(torch.tensor(x), torch.tensor(math.inf)).item()


def state(masked, stable=None, step=0, **kw) -> StepState:
    masked = torch.tensor(masked)
    stable = torch.ones_like(masked, dtype=torch.long) if stable is None else torch.tensor(stable)
    return StepState(masked, ~masked, 0, stable, step, **kw)


def commits(policy: str, conf, st: StepState, **kw) -> list[int]:
    conf = torch.tensor([conf])
    rule = registry.get(policy).resolve()
    return rule(conf, conf, st, DecodeConfig(policy=policy, **kw))[0].int().tolist()


# ---- each rule at its boundary ----

def test_threshold_commits_a_confidence_of_exactly_tau():
    got = commits("threshold", [0.75, below(0.75), 1.0], state([[True, True, False]]), tau=0.75)
    assert got == [1, 0, 0]


def test_factor_commits_the_nth_at_exactly_one_minus_f_over_n_plus_one():
    # f = 1: the third most confident needs 1 - 1/4 = 0.75, the fourth 1 - 1/5 = 0.8
    conf = [0.75, 1.0, 0.5, 0.875, 0.25]
    st = state([[True] * 5])
    assert commits("factor", conf, st, factor=1.0) == [1, 1, 0, 1, 0]
    conf[0] = below(0.75)  # no longer enough: the prefix ends after the second
    assert commits("factor", conf, st, factor=1.0) == [0, 1, 0, 1, 0]
    # f = 2: the third needs exactly 1 - 2/4 = 0.5; 0.5 after it would need 1 - 2/5 = 0.6
    conf = [0.5, 1.0, 0.5, 0.875, 0.25]
    assert commits("factor", conf, st, factor=2.0) == [1, 1, 0, 1, 0]


def test_localleap_anchor_neighbour_and_radius_edges_are_inclusive():
    # p3 anchors at exactly tau_hi; p1 and p5 sit exactly radius away at exactly tau_lo and
    # follow it; p0 (radius + 1 away) does not, nor p4 (just under tau_lo); p7, just under
    # tau_hi, anchors nothing, so p6 (0.5, one from p7, three from p3) stays masked
    conf = [0.5, 0.5, 0.25, 0.75, below(0.5), 0.5, 0.5, below(0.75)]
    kw = dict(leap_tau_hi=0.75, leap_tau_lo=0.5, leap_radius=2)
    assert commits("localleap", conf, state([[True] * 8]), **kw) == [0, 1, 0, 1, 0, 1, 0, 0]
    kw["leap_radius"] = 0  # anchors alone
    assert commits("localleap", conf, state([[True] * 8]), **kw) == [0, 0, 0, 1, 0, 0, 0, 0]


def test_stdec_commits_at_exactly_tau_and_relaxes_at_exactly_the_window():
    # tau_low = tau_high: every threshold is exactly 0.75, relaxed exactly 0.375
    conf = [0.75, below(0.75), 0.375, 0.375, below(0.375), 0.375, 1.0]
    stable = [[1, 1, 2, 1, 2, 3, 9]]
    st = state([[True] * 6 + [False]], stable)
    got = commits("stdec", conf, st, tau_high=0.75, tau_low=0.75, rho=0.5, window=2)
    assert got == [1, 0, 1, 0, 0, 1, 0]


def test_stdec_spatial_threshold_is_met_exactly_and_lower_near_decoded_tokens():
    cfg = DecodeConfig(tau_high=0.75, tau_low=0.5, sigma=1.0, rho=0.5, window=2)
    decoded = torch.tensor([[True] * 4 + [False] * 12])  # a 4-token prompt, then the block
    tau = stdec_thresholds(decoded, 4, 12, cfg)
    # smoothing: lowest next to the prompt, rising to tau_high beyond ceil(3 sigma) tokens
    assert cfg.tau_low < tau[0, 0] < tau[0, 1] < tau[0, 2] < cfg.tau_high
    assert torch.allclose(tau[0, 3:], torch.tensor(0.75), rtol=0, atol=1e-6)
    masked = ~decoded[:, 4:]
    fresh = StepState(masked, decoded, 4, torch.ones(1, 12, dtype=torch.long), 0)
    held = StepState(masked, decoded, 4, torch.full((1, 12), 2), 0)
    rule = registry.get("stdec").resolve()
    assert rule(tau, tau, fresh, cfg).all()
    short = torch.nextafter(tau, torch.zeros_like(tau))
    assert not rule(short, short, fresh, cfg).any()
    relaxed = cfg.rho * tau
    assert rule(relaxed, relaxed, held, cfg).all() and not rule(relaxed, relaxed, fresh, cfg).any()
    short = torch.nextafter(relaxed, torch.zeros_like(relaxed))
    assert not rule(short, short, held, cfg).any()


def test_eb_commits_while_the_entropy_ahead_is_exactly_gamma():
    # ascending 0.25 (p0), 0.25 (p2), 0.5 (p1), 1.0 (p3): entropy ahead 0, 0.25, 0.5, 1.0
    entropy = torch.tensor([[0.25, 0.5, 0.25, 1.0]])
    st = state([[True] * 4], entropy=entropy)
    assert commits("eb", [0.0] * 4, st, eb_gamma=0.5) == [1, 1, 1, 0]
    assert commits("eb", [0.0] * 4, st, eb_gamma=below(0.5)) == [1, 0, 1, 0]
    assert commits("eb", [0.0] * 4, st, eb_gamma=1.0) == [1, 1, 1, 1]


def test_klass_needs_confidence_above_tau_kl_below_its_bound_and_enough_calm_steps():
    kw = dict(klass_tau=0.75, klass_kl=0.25, klass_steps=2)
    # p0: exactly tau, not above it; p1: just above; p2: KL exactly the bound, not below
    # it (calm restarts); p3: just below it; p4: calm reaches exactly klass_steps; p5: one short
    conf = [0.75, above(0.75), 1.0, 1.0, 1.0, 1.0]
    kl = torch.tensor([[0.0, 0.0, 0.25, below(0.25), 0.0, 0.0]])
    memory = torch.tensor([[5.0, 5.0, 5.0, 1.0, 1.0, 0.0]])
    st = state([[True] * 6], kl=kl, memory=memory)
    assert commits("klass", conf, st, **kw) == [0, 1, 0, 1, 1, 0]
    assert st.memory.tolist() == [[6.0, 6.0, 0.0, 2.0, 2.0, 1.0]]


def test_wino_drafts_above_draft_and_doubts_below_verify_strictly():
    kw = dict(wino_draft=0.5, wino_verify=0.75)
    # p0 exactly wino_draft: no draft; p1-p4 drafted (four: up to three go back)
    conf = [0.5, above(0.5), 0.75, 1.0, 0.875, 0.0, 0.0, 0.0]
    # earlier drafts: p5 exactly wino_verify is believed, p6 just under it is doubted, p7 too
    masked = [[True] * 5 + [False] * 3]
    token_conf = torch.tensor([[0.0] * 5 + [0.75, below(0.75), 0.25]])
    drafted = torch.tensor([[False] * 5 + [True] * 3])
    st = state(masked, token_conf=token_conf, drafted=drafted)
    assert commits("wino", conf, st, **kw) == [0, 1, 1, 1, 1, 0, 0, 0]
    assert st.remask.int().tolist() == [[0, 0, 0, 0, 0, 0, 1, 1]]
    # two drafted now: exactly one goes back, the least probable (p7)
    conf[3] = conf[4] = 0.0
    assert commits("wino", conf, st, **kw) == [0, 1, 1, 0, 0, 0, 0, 0]
    assert st.remask.int().tolist() == [[0, 0, 0, 0, 0, 0, 0, 1]]
    conf[2] = 0.0  # one drafted now: nothing goes back
    commits("wino", conf, st, **kw)
    assert not st.remask.any()


def test_credit_commits_at_exactly_credit_tau():
    # alpha 1: a step adds conf; decay 0.5 and lambda 1: a held position with credit 3 before
    # this step has 0.5 * 3 + 0.5 = 2 now, a boost of 1 + 2 = 3 on its odds, and a fused
    # probability of 0.5 * 3 / (0.5 + 0.5 * 3) = 0.75 exactly; p1's prediction just changed
    # (credit 0.5, fused 0.6)
    kw = dict(credit_alpha=1.0, credit_decay=0.5, credit_lambda=1.0)
    st = state([[True] * 2], stable=[[2, 1]], memory=torch.tensor([[3.0, 3.0]]))
    assert commits("credit", [0.5, 0.5], st, credit_tau=0.75, **kw) == [1, 0]
    assert st.memory.tolist() == [[2.0, 0.5]]
    st.memory = torch.tensor([[3.0, 3.0]])
    assert commits("credit", [0.5, 0.5], st, credit_tau=above(0.75), **kw) == [0, 0]
    # lambda 0, no boost: the plain confidence at exactly credit_tau
    st = state([[True] * 2], memory=torch.zeros(1, 2))
    assert commits("credit", [0.75, below(0.75)], st, credit_tau=0.75, credit_lambda=0.0) == [1, 0]


def test_fixed_gives_the_remainder_to_the_first_steps_only():
    # 6 positions in 4 steps: k = 2, 2, 1, 1; steps 1 and 2 sit either side of the remainder
    conf = [0.5, 0.75, 0.25, 1.0, 0.375, 0.875]
    cfg = dict(gen_length=6, block_length=6, steps=4)
    got = [commits("fixed", conf, state([[True] * 6], step=s), **cfg) for s in range(4)]
    assert got[:2] == [[0, 0, 0, 1, 0, 1]] * 2
    assert got[2:] == [[0, 0, 0, 1, 0, 0]] * 2
    # an even schedule (6 in 3 steps): no remainder, two every step
    assert commits("fixed", conf, state([[True] * 6], step=0), gen_length=6, block_length=6,
                   steps=3) == [0, 0, 0, 1, 0, 1]


# ---- rule state starts clean: in a reused slot and at every block ----
# stdec's stability count and credit's credit show a stale state in what they commit;
# klass's calm count restarts by itself (a block's first KL is infinite) and wino's drafts
# count only at positions its rule committed in this block, so for those two the tests
# guard behaviour that no stale state changes today

PROMPT = [5, 9, 33, 7, 101, 54, 8, 17, 250, 42, 61, 3]
OTHER = [77, 12, 190, 6, 48, 230, 11]
# settings inside the random model's confidences (0.5 to 0.9, one token predicted almost
# everywhere) under which each rule's state changes what it commits
STATEFUL = {
    "stdec": dict(tau_high=0.9, tau_low=0.75, sigma=1.5, rho=0.5, window=2),
    "credit": dict(credit_tau=0.8),
    "klass": dict(klass_tau=0.8, klass_kl=0.01),
    "wino": dict(wino_draft=0.8, wino_verify=0.9),
}
# what switches the state's effect off: stdec's temporal relaxation, credit's boost
STATELESS = {"stdec": dict(rho=1.0), "credit": dict(credit_lambda=0.0)}


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config(), peak=16.0)


def stateful(policy: str) -> DecodeConfig:
    return DecodeConfig(policy=policy, gen_length=32, block_length=8, trace=True,
                        stop_at_eos=False, **STATEFUL[policy])


def assert_as_alone(model, requests, prompts, cfg: DecodeConfig):
    alone = {tuple(p): decode(model, [p], cfg) for p in prompts}
    for request, prompt in zip(requests, prompts, strict=True):
        assert_same(request, alone[tuple(prompt)])


def assert_same(request, alone):
    assert request.state == "done"
    assert request.ids == alone.ids[0].tolist()
    assert torch.equal(request.trace.step, alone.trace.step)
    assert torch.equal(request.trace.confidence, alone.trace.confidence)


@pytest.mark.parametrize("policy", STATELESS)
def test_the_settings_make_the_rules_state_matter(model, policy):
    cfg = stateful(policy)
    with_state = decode(model, [PROMPT], cfg).trace.step
    without = decode(model, [PROMPT], replace(cfg, **STATELESS[policy])).trace.step
    assert not torch.equal(with_state, without)


@pytest.mark.parametrize("policy", STATEFUL)
def test_a_reused_slot_starts_clean(model, policy):
    # one slot: each request finds the state the one before it left in its last block
    cfg = stateful(policy)
    engine = Engine(model, max_batch=1, max_length=64)
    prompts = (PROMPT, PROMPT, OTHER, PROMPT)
    requests = [engine.submit(p, cfg) for p in prompts]
    engine.run()
    assert_as_alone(model, requests, prompts, cfg)


@pytest.mark.parametrize("policy", STATEFUL)
def test_a_slot_freed_mid_block_starts_clean(model, policy):
    # the first request leaves one step of state at every offset of its block: the same
    # predictions the next request's first step makes
    cfg = stateful(policy)
    engine = Engine(model, max_batch=1, max_length=64)
    dropped = engine.submit(PROMPT, cfg)
    engine.step()
    dropped.cancel()
    prompts = (PROMPT, OTHER)
    requests = [engine.submit(p, cfg) for p in prompts]
    engine.run()
    assert dropped.state == "cancelled"
    assert_as_alone(model, requests, prompts, cfg)


@torch.no_grad()
def reference(model, prompt: list[int], cfg: DecodeConfig) -> tuple[list[int], torch.Tensor]:
    """One row, a full forward a step, the rule through `select`; the stability count, the
    last prediction and the rule's memory restart at every block. (ids, trace steps)."""
    mask, P, G, bl = model.config.mask_token_id, len(prompt), cfg.gen_length, cfg.block_length
    x = torch.tensor([prompt + [mask] * G])
    steps = torch.full((1, G), -1)
    nfe = 0
    for s in range(P, P + G, bl):
        block = slice(s, s + bl)
        stable, prev = torch.zeros(1, bl, dtype=torch.long), torch.full((1, bl), -1)
        memory, step = torch.zeros(1, bl), 0
        while (x[:, block] == mask).any():
            logits = model(x)[:, block].float()
            logits[..., mask] = -math.inf
            conf, pred = logits.softmax(-1).max(-1)
            stable = torch.where(pred == prev, stable + 1, 1)
            prev = pred
            st = StepState(x[:, block] == mask, x != mask, s, stable, step, memory=memory)
            commit = select(conf, pred, st, cfg)
            memory, nfe, step = st.memory, nfe + 1, step + 1
            x[:, block] = torch.where(commit, pred, x[:, block])
            steps[:, s - P : s - P + bl] = torch.where(commit, nfe, steps[:, s - P : s - P + bl])
    return x[0, P:].tolist(), steps


@pytest.mark.parametrize("policy", STATELESS)
def test_every_block_starts_clean(model, policy):
    # the random model predicts the same token at most offsets of every block: a count
    # carried over from the block before would relax (stdec) or boost (credit) at once
    cfg = stateful(policy)
    out = decode(model, [PROMPT, OTHER], cfg)  # two slots, reaching new blocks at other steps
    for i, prompt in enumerate((PROMPT, OTHER)):
        ids, steps = reference(model, prompt, cfg)
        assert out.ids[i].tolist() == ids
        assert torch.equal(out.trace.step[i], steps[0])


def test_a_reused_slot_leaves_no_confidence_where_eos_fills():
    # forward 0 (first request): all four at 0.95; forward 1 (second): EOS at p0 (0.95), so
    # p1-p3 (0.5) are filled, committed by no rule: their confidence is NaN, not the first request's
    def script(n):
        if n == 0:
            return peaked([5, 6, 7, 8], [0.95] * 4)
        return peaked([EOS, 6, 7, 8], [0.95, 0.5, 0.5, 0.5])

    cfg = DecodeConfig(policy="threshold", gen_length=4, block_length=4, trace=True)
    engine = Engine(Scripted(script), max_batch=1, max_length=8)
    first, second = engine.submit([3, 4], cfg), engine.submit([3, 4], cfg)
    engine.run()
    assert first.ids == [5, 6, 7, 8] and second.ids == [EOS] * 4
    assert second.trace.step[0].tolist() == [1, 1, 1, 1]
    conf = second.trace.confidence[0]
    assert conf[0].item() == pytest.approx(0.95) and conf[1:].isnan().all()


# ---- what a rule's own state holds, read by a probe rule ----


@dataclass(frozen=True)
class ProbeParams:
    pass


def probe_rule(seen: list):
    """Commits positions 0 and 1 of a block at its first step and takes position 0 back;
    commits the rest at its second. Records the state it was given, and leaves 7 in its
    memory."""

    def probe(conf, pred, state, cfg):
        seen.append((int(state.step), state.stable.clone(), state.memory.clone(),
                     state.drafted.clone()))
        state.memory = torch.full_like(state.memory, 7.0)
        if int(state.step) == 0:
            commit = torch.zeros_like(state.masked)
            commit[:, :2] = True
            state.remask = torch.zeros_like(state.masked)
            state.remask[:, 0] = True
            return commit
        return state.masked

    return probe


def test_a_rules_memory_and_drafts_start_empty_and_exclude_what_it_took_back():
    # two requests through one slot, two blocks each: every block's first step finds zero
    # memory and no drafts; its second finds the memory written and only position 1 drafted
    seen = []
    registry.register(registry.Rule("probe", ProbeParams, probe_rule(seen),
                                    needs=frozenset({"memory", "drafted"}), remasks=True))
    cfg = DecodeConfig(policy="probe", gen_length=8, block_length=4, stop_at_eos=False)
    engine = Engine(Scripted(lambda n: peaked([5, 6, 7, 8], [0.9] * 4)), max_batch=1,
                    max_length=16)
    requests = [engine.submit([3, 4], cfg) for _ in range(2)]
    engine.run()
    assert [r.ids for r in requests] == [[5, 6, 7, 8] * 2] * 2
    assert [step for step, *_ in seen] == [0, 1] * 4
    for step, stable, memory, drafted in seen:
        assert stable.dtype == torch.long  # counts, as StepState documents
        if step == 0:
            assert memory.eq(0).all() and not drafted.any()
        else:
            assert memory.eq(7).all()
            assert drafted[0].tolist() == [False, True, False, False]
