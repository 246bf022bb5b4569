"""Each commit rule on hand-built tensors."""

import math

import numpy as np
import pytest
import torch

from stdec.decoding import policies, registry
from stdec.decoding.config import DecodeConfig
from stdec.decoding.policies import StepState, at_least_one, select, stdec_thresholds


def state(masked, decoded=None, start=0, stable=None, step=0) -> StepState:
    masked = torch.tensor(masked)
    decoded = ~masked if decoded is None else torch.tensor(decoded)
    stable = torch.ones_like(masked, dtype=torch.long) if stable is None else torch.tensor(stable)
    return StepState(masked, decoded, start, stable, step)


def test_threshold_commits_masked_positions_at_or_above_tau():
    conf = torch.tensor([[0.95, 0.9, 0.89, 0.99]])
    st = state([[True, True, True, False]])
    got = policies.threshold(conf, conf, st, DecodeConfig(policy="threshold", tau=0.9))
    assert got.tolist() == [[True, True, False, False]]


def test_fixed_takes_k_most_confident_leftmost_on_ties():
    conf = torch.tensor([[0.5, 0.7, 0.7, 0.9, 0.7, 0.99]])
    st = state([[True, True, True, True, True, False]])
    # block 6, 4 steps: k = 2, 2, 1, 1
    cfg = DecodeConfig(policy="fixed", gen_length=6, block_length=6, steps=4)
    assert policies.fixed(conf, conf, st, cfg).tolist() == [[0, 1, 0, 1, 0, 0]]
    st.step = 2
    assert policies.fixed(conf, conf, st, cfg).tolist() == [[0, 0, 0, 1, 0, 0]]


def test_factor_commits_the_longest_prefix_over_its_bound():
    # sorted masked: 0.9 (always), 0.76 >= 1 - 1/3, 0.7 < 1 - 1/4: two committed
    conf = torch.tensor([[0.7, 0.9, 0.5, 0.76, 0.99], [0.2, 0.1, 0.3, 0.1, 0.1]])
    st = state([[True, True, True, True, False], [True] * 5])
    got = policies.factor(conf, conf, st, DecodeConfig(policy="factor", factor=1.0))
    assert got.int().tolist() == [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0]]


def test_localleap_commits_anchors_and_confident_neighbours():
    conf = torch.tensor([[0.8, 0.1, 0.95, 0.8, 0.8, 0.8, 0.8]])
    st = state([[True] * 7])
    cfg = DecodeConfig(policy="localleap", leap_tau_hi=0.9, leap_tau_lo=0.75, leap_radius=2)
    assert policies.localleap(conf, conf, st, cfg).int().tolist() == [[1, 0, 1, 1, 1, 0, 0]]


def numpy_thresholds(decoded: np.ndarray, start: int, length: int, cfg) -> np.ndarray:
    base = np.where(decoded, cfg.tau_low, cfg.tau_high)
    r = math.ceil(3 * cfg.sigma)
    padded = np.pad(base, (r, r), mode="edge")
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / cfg.sigma) ** 2)
    out = [(g * padded[i : i + 2 * r + 1]).sum() / g.sum() for i in range(len(base))]
    return np.array(out)[start : start + length]


@pytest.mark.parametrize("start", [0, 3, 20])
def test_stdec_gaussian_thresholds_match_numpy(start):
    rng = np.random.default_rng(start)
    decoded = rng.random((3, 28)) < 0.4
    cfg = DecodeConfig(tau_high=0.95, tau_low=0.5, sigma=1.7)
    got = stdec_thresholds(torch.tensor(decoded), start, 8, cfg).numpy()
    want = np.stack([numpy_thresholds(row, start, 8, cfg) for row in decoded])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_stdec_thresholds_fall_near_decoded_tokens():
    decoded = torch.tensor([[True] * 6 + [False] * 20])
    tau = stdec_thresholds(decoded, 6, 16, DecodeConfig(tau_high=0.9, tau_low=0.5, sigma=2.0))[0]
    assert (tau[1:] >= tau[:-1]).all() and tau[0] < 0.75 and tau[-1] == pytest.approx(0.9)


def test_stdec_halves_switch_off():
    cfg = DecodeConfig(tau_high=0.8, tau_low=0.8, rho=1.0)
    decoded = torch.tensor([[True, False, False, False]])
    assert torch.equal(stdec_thresholds(decoded, 1, 3, cfg), torch.full((1, 3), 0.8))
    conf = torch.tensor([[0.79, 0.8, 0.3]])
    st = state([[True] * 3], decoded.tolist(), 1, [[9, 9, 9]])
    assert policies.stdec(conf, conf, st, cfg).tolist() == [[False, True, False]]


def test_stdec_temporal_relax_needs_the_window():
    cfg = DecodeConfig(tau_high=0.9, tau_low=0.9, rho=0.9, window=3)
    conf = torch.tensor([[0.85, 0.85, 0.8]])
    st = state([[True] * 3], [[False] * 3], 0, [[3, 2, 5]])
    assert policies.stdec(conf, conf, st, cfg).tolist() == [[True, False, False]]


def test_at_least_one_commits_the_leftmost_most_confident():
    conf = torch.tensor([[0.3, 0.6, 0.6, 0.1], [0.9, 0.2, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5]])
    masked = torch.tensor([[True] * 4, [False, True, True, True], [False] * 4])
    none = torch.zeros(3, 4, dtype=torch.bool)
    got = at_least_one(none, conf, masked).int().tolist()
    assert got == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    some = torch.tensor([[False, False, False, True]] + [[False] * 4] * 2)
    assert at_least_one(some, conf, masked)[0].tolist() == [False, False, False, True]


def test_every_policy_commits_at_least_one_per_unfinished_row():
    conf = torch.full((2, 5), 0.01)
    st = state([[True] * 5, [False, True, False, True, False]])
    # what the engine gives the rules of policies.NEEDS: nothing certain, nothing calm
    st.entropy, st.kl = torch.full((2, 5), 3.0), torch.full((2, 5), math.inf)
    st.memory, st.token_conf = torch.zeros(2, 5), torch.zeros(2, 5)
    st.drafted = torch.zeros(2, 5, dtype=torch.bool)
    for name in registry.names():
        got = select(conf, conf, st, DecodeConfig(policy=name, gen_length=5, block_length=5))
        assert got.sum(1).tolist() == [1, 1], name
        assert not (got & ~st.masked).any(), name


def test_factor_bound_is_one_minus_f_over_n_plus_one():
    # the second most confident (0.7) passes 1 - 1/3 = 0.667 but not 1 - 1/4 = 0.75
    conf = torch.tensor([[0.1, 0.9, 0.7, 0.2]])
    got = policies.factor(conf, conf, state([[True] * 4]), DecodeConfig(policy="factor"))
    assert got.int().tolist() == [[0, 1, 1, 0]]


def test_localleap_thresholds_are_inclusive():
    # exactly tau_hi anchors; exactly tau_lo next to an anchor follows it (0.75, 0.5 exact)
    conf = torch.tensor([[0.75, 0.5, 0.25, 0.5]])
    cfg = DecodeConfig(policy="localleap", leap_tau_hi=0.75, leap_tau_lo=0.5, leap_radius=1)
    got = policies.localleap(conf, conf, state([[True] * 4]), cfg)
    assert got.int().tolist() == [[1, 1, 0, 0]]
