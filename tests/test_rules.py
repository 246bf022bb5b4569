"""eb, klass, wino and credit on hand-built inputs whose commits are written out by hand."""

import math

import torch
from scripted import Scripted, peaked

from stdec.decoding import policies
from stdec.decoding.config import DecodeConfig
from stdec.decoding.engine import Engine, decode
from stdec.decoding.policies import StepState, select


def state(masked, **kw) -> StepState:
    masked = torch.tensor(masked)
    stable = torch.ones_like(masked, dtype=torch.long)
    return StepState(masked, ~masked, 0, stable, 0, **kw)


def traced(policy: str, script, length: int, **kw):
    cfg = DecodeConfig(policy=policy, gen_length=length, block_length=length, trace=True,
                       stop_at_eos=False, **kw)
    return decode(Scripted(script), [[3, 4]], cfg)


# ---- eb ----

def test_eb_commits_the_lowest_entropy_prefix_within_gamma_less_its_largest():
    # ascending: 0.01 (p4), 0.02 (p2), 0.05 (p0), 0.3 (p1), 0.5 (p3); entropy ahead of each
    # in that order: 0, 0.01, 0.03, 0.08, 0.38; p5 is decoded (its 0.0 does not count)
    entropy = torch.tensor([[0.05, 0.3, 0.02, 0.5, 0.01, 0.0]])
    st = state([[True] * 5 + [False]], entropy=entropy)
    rule = policies.eb
    got = rule(entropy, entropy, st, DecodeConfig(policy="eb", eb_gamma=0.1))
    assert got.int().tolist() == [[1, 1, 1, 0, 1, 0]]  # 0.08 <= 0.1 < 0.38
    got = rule(entropy, entropy, st, DecodeConfig(policy="eb", eb_gamma=0.03))
    assert got.int().tolist() == [[1, 0, 1, 0, 1, 0]]  # 0.03 <= 0.03
    got = rule(entropy, entropy, st, DecodeConfig(policy="eb", eb_gamma=0.005))
    assert got.int().tolist() == [[0, 0, 0, 0, 1, 0]]  # the first always


def test_eb_ties_go_left_and_rows_are_independent():
    entropy = torch.tensor([[0.2, 0.2, 0.2, 0.2], [1.0, 0.0, 2.0, 0.0]])
    st = state([[True] * 4, [True, True, True, False]], entropy=entropy)
    got = policies.eb(entropy, entropy, st, DecodeConfig(policy="eb", eb_gamma=0.45))
    # row 0: ahead 0, 0.2, 0.4, 0.6 -> three, leftmost first; row 1: 0.0 (p1), then 1.0 (p0):
    # ahead 0, 0 -> both; then 2.0 (p2): ahead 1.0 > 0.45
    assert got.int().tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]


def test_eb_reads_the_entropy_the_engine_computes():
    # p0 certain (entropy 0), p1 a 50/50 split (ln 2), p2 spread over 14 ids (ln 14)
    half = {5: 0.5, 6: 0.5}
    spread = {t: 1 / 14 for t in range(16) if t != 2}
    spread.pop(0)
    dists = [{7: 1.0}, half, spread]
    out = traced("eb", lambda n: dists, 3, eb_gamma=0.7)
    # step 1: ahead of p1 is 0, of p2 ln 2 = 0.693 <= 0.7: all three at once
    assert out.trace.step[0].tolist() == [1, 1, 1]
    out = traced("eb", lambda n: dists, 3, eb_gamma=0.69)
    assert out.trace.step[0].tolist() == [1, 1, 2]


# ---- klass ----

def test_klass_waits_for_klass_steps_of_small_kl_above_the_threshold():
    # p3 changes its prediction between the first and second forward: its KL restarts
    def script(n):
        preds = [3, 4, 5, 6 if n == 0 else 9, 7, 8]
        return peaked(preds, [0.99, 0.98, 0.95, 0.95, 0.5, 0.95])

    out = traced("klass", script, 6)
    # nfe 1: no KL yet -> the most confident (p0); nfe 2: one calm step -> at least one (p1);
    # nfe 3: two calm steps, conf > 0.9: p2, p5 (p4 too unsure); nfe 4: p3; nfe 5: p4 alone
    assert out.trace.step[0].tolist() == [1, 2, 3, 4, 5, 3]
    out = traced("klass", script, 6, klass_steps=1)
    assert out.trace.step[0].tolist() == [1, 2, 2, 3, 4, 2]


def test_klass_kl_bound_is_strict_and_measured_against_the_previous_step():
    cfg = DecodeConfig(policy="klass", klass_kl=0.01, klass_steps=2, klass_tau=0.9)
    conf = torch.tensor([[0.95, 0.95, 0.95, 0.89]])
    st = state([[True] * 4], kl=torch.tensor([[0.0, 0.01, 0.005, 0.0]]),
               memory=torch.tensor([[1.0, 1.0, 0.0, 5.0]]))
    got = policies.klass(conf, conf, st, cfg)
    assert got.int().tolist() == [[1, 0, 0, 0]]
    assert st.memory.tolist() == [[2.0, 0.0, 1.0, 6.0]]


# ---- wino ----

def test_wino_drafts_wide_and_masks_doubted_drafts_again():
    def script(n):
        if n == 0:  # p0, p1 over 0.6: drafted
            return peaked([3, 4, 5, 6], [0.7, 0.65, 0.3, 0.2])
        if n == 1:  # p2, p3 drafted; the model doubts p1's token (0.7 < 0.9): masked again
            return peaked([3, 4, 5, 6], [0.95, 0.7, 0.8, 0.65])
        # one draft only (p1): no verification, p2's doubt (0.5) does not count
        return peaked([3, 4, 5, 6], [0.95, 0.95, 0.5, 0.95])

    out = traced("wino", script, 4)
    assert out.ids[0].tolist() == [3, 4, 5, 6]
    assert out.trace.step[0].tolist() == [1, 3, 2, 2]
    assert out.stats[0].nfe == 3


def test_wino_takes_back_at_most_one_fewer_than_it_drafts():
    cfg = DecodeConfig(policy="wino")
    conf = torch.tensor([[0.1, 0.1, 0.1, 0.7, 0.8, 0.65]])
    st = state([[False, False, False, True, True, True]],
               token_conf=torch.tensor([[0.3, 0.2, 0.95, 0.0, 0.0, 0.0]]),
               drafted=torch.tensor([[True, True, True, False, False, False]]))
    commit = policies.wino(conf, conf, st, cfg)
    assert commit.int().tolist() == [[0, 0, 0, 1, 1, 1]]
    # three drafts: two may go back; p1 (0.2) and p0 (0.3) are doubted, p2 (0.95) is not
    assert st.remask.int().tolist() == [[1, 1, 0, 0, 0, 0]]
    conf = torch.tensor([[0.1, 0.1, 0.1, 0.7, 0.8, 0.5]])
    policies.wino(conf, conf, st, cfg)
    assert st.remask.int().tolist() == [[0, 1, 0, 0, 0, 0]]  # two drafts: one back


def test_wino_streams_only_what_it_cannot_take_back():
    def script(n):  # block 1 (p0-p3) as in the test above, then block 2 at once
        if n == 0:
            return peaked([3, 4, 5, 6], [0.7, 0.65, 0.3, 0.2])
        if n == 1:
            return peaked([3, 4, 5, 6], [0.95, 0.7, 0.8, 0.65])
        return peaked([3, 4, 5, 6], [0.95, 0.95, 0.5, 0.95])

    cfg = DecodeConfig(policy="wino", gen_length=8, block_length=4, stop_at_eos=False)
    engine = Engine(Scripted(script), max_batch=1, max_length=16)
    seen = []
    r = engine.submit([3, 4], cfg,
                      listener=lambda q: seen.append((q.committed, list(q.tokens))))
    r.progress = True  # a listener of every step
    engine.run()
    counts = [c for c, _ in seen]
    assert counts == sorted(counts) and counts[-1] == 8 and 4 in counts
    for committed, tokens in seen:
        assert tokens[:committed] == r.ids[:committed]
    assert r.steps[:4] == [1, 3, 2, 2]  # the trace forgets the taken-back commit


# ---- credit ----

def credit_fused(conf: float, credit: float, lam: float = 0.7) -> float:
    boost = (1 + credit) ** lam
    return conf * boost / (1 - conf + conf * boost)


def test_credit_accumulates_while_the_prediction_holds():
    # conf 0.9 held: credits 0.9 ** 0.5 = 0.949, then * 0.65 + 0.949 = 1.565, then 1.966;
    # fused 0.935, 0.946, 0.951: over 0.95 at the third step
    c1 = 0.9 ** 0.5
    c2, c3 = 0.65 * c1 + c1, 0.65 * (0.65 * c1 + c1) + c1
    assert [credit_fused(0.9, c) >= 0.95 for c in (c1, c2, c3)] == [False, False, True]
    cfg = DecodeConfig(policy="credit")
    conf = torch.tensor([[0.9, 0.9, 0.9]])
    st = state([[True] * 3], memory=torch.tensor([[c2, c2, c1]]))
    st.stable = torch.tensor([[3, 1, 2]])  # p1's prediction just changed: its credit restarts
    got = policies.credit(conf, conf, st, cfg)
    assert got.int().tolist() == [[1, 0, 0]]
    assert torch.allclose(st.memory, torch.tensor([[c3, c1, c2]]))


def test_credit_decodes_a_held_position_before_a_flipping_one():
    def script(n):  # p2 flips its prediction every step, p1 and p3 hold theirs
        return peaked([3, 4, 5 + n % 2, 7], [0.99, 0.91, 0.9, 0.9])

    out = traced("credit", script, 4)
    # nfe 1: p0 (0.99); nfe 2: no fused confidence reaches 0.95 -> p1 (the most confident
    # left); nfe 3: p3's credit lifts it over 0.95; nfe 4: p2 by the at-least-one rule
    assert out.trace.step[0].tolist() == [1, 2, 4, 3]
    assert math.isclose(out.trace.confidence[0, 3].item(), 0.9, rel_tol=1e-5)


def test_select_keeps_at_least_one_for_every_new_rule():
    conf = torch.tensor([[0.2, 0.3, 0.1]])
    for name, extra in [("eb", {"entropy": torch.tensor([[2.0, 1.0, 3.0]])}),
                        ("klass", {"kl": torch.full((1, 3), math.inf),
                                   "memory": torch.zeros(1, 3)}),
                        ("wino", {"token_conf": torch.zeros(1, 3),
                                  "drafted": torch.zeros(1, 3, dtype=torch.bool)}),
                        ("credit", {"memory": torch.zeros(1, 3)})]:
        got = select(conf, conf, state([[True] * 3], **extra), DecodeConfig(policy=name))
        assert got.int().tolist() == [[0, 1, 0]], name


def test_wino_drafts_strictly_above_its_threshold_and_keeps_drafts_it_believes():
    cfg = DecodeConfig(policy="wino", wino_draft=0.5, wino_verify=0.75)
    # p0 (0.5) is not above 0.5; p1-p3 are drafted: up to two earlier drafts may go back,
    # but only p4 is doubted (0.25 < 0.75); p5 (0.75) and p6 (0.875) are believed
    conf = torch.tensor([[0.5, 0.625, 0.75, 1.0, 0.0, 0.0, 0.0]])
    st = state([[True, True, True, True, False, False, False]],
               token_conf=torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.25, 0.75, 0.875]]),
               drafted=torch.tensor([[False, False, False, False, True, True, True]]))
    commit = policies.wino(conf, conf, st, cfg)
    assert commit.int().tolist() == [[0, 1, 1, 1, 0, 0, 0]]
    assert st.remask.int().tolist() == [[0, 0, 0, 0, 1, 0, 0]]
