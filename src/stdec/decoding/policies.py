"""Commit rules: small pure functions from (confidence, prediction, state) to a commit mask.

Every rule sees only the active block: `conf` and `pred` are (B, L) for its L positions.
Rules are vectorised over the batch and never synchronise with the host. A new rule is
one function with the signature of `threshold` and one entry in decoding/registry.py.

A stateful rule keeps per-position memory in `state.memory` (the engine stores it per slot
and block offset, zero at each block start) and writes its new value back there; a rule
that may take tokens back (wino) sets `state.remask`. What a rule needs beyond confidence
(entropy, KL to the previous step, the probability of the tokens already in place) the
engine computes only for the rules whose registry entry `needs` it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from stdec.decoding import registry

if TYPE_CHECKING:
    from stdec.decoding.config import DecodeConfig

__all__ = ["StepState", "at_least_one", "gaussian_kernel", "select",
           "stdec_thresholds"]


@dataclass
class StepState:
    """What a rule may look at besides confidence and prediction.

    masked:      (B, L) bool, positions of the block still masked
    decoded:     (B, T) bool, the whole sequence: True where a token is decoded
                 (prompt, padding or committed)
    block_start: index of the block's first position in the sequence; (B, 1) when rows
                 sit at different blocks (the engine's slots)
    stable:      (B, L) int, consecutive steps (this one included) the prediction has held
    step:        steps already taken in this block (0 at its first step); int or (B, 1)
    seq_end:     (B, 1) each row's sequence length when rows end before T; None: all end at T
    entropy:     (B, L) float, entropy of each position's distribution (eb)
    kl:          (B, L) float, KL(p_t || p_t-1) against the previous step of this block; inf
                 at the block's first step (klass)
    token_conf:  (B, L) float, the model's probability of the token now at each position (wino)
    drafted:     (B, L) bool, positions this rule committed earlier in this block and did not
                 take back (wino)
    memory:      (B, L) float, the rule's per-position memory from the previous step, 0 at a
                 block's first (klass: consecutive low-KL steps, credit: the credit); the rule
                 writes the new one
    remask:      (B, L) bool, set by a rule: decoded positions to mask again (wino)
    """

    masked: Tensor
    decoded: Tensor
    block_start: int | Tensor
    stable: Tensor
    step: int | Tensor
    seq_end: Tensor | None = None
    entropy: Tensor | None = None
    kl: Tensor | None = None
    token_conf: Tensor | None = None
    drafted: Tensor | None = None
    memory: Tensor | None = None
    remask: Tensor | None = None


def fixed(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """LLaDA: commit the k most confident masked positions, k from an even schedule."""
    length = conf.shape[1]  # the block's (a last, shorter block's own)
    steps = cfg.params.steps_per_block(cfg, length)
    # LLaDA's schedule: block // steps each step, the remainder spread over the first steps
    k = length // steps + (state.step < length % steps)
    return (_rank(conf, state.masked) < k) & state.masked


def threshold(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """Fast-dLLM: commit every masked position with confidence >= tau."""
    return (conf >= cfg.tau) & state.masked


def factor(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """Fast-dLLM: commit the longest confidence-sorted prefix with c_(n) >= 1 - f / (n + 1)."""
    ranked = torch.sort(conf.masked_fill(~state.masked, -math.inf), dim=1, descending=True).values
    n = torch.arange(1, conf.shape[1] + 1, device=conf.device)
    ok = ranked >= 1 - cfg.factor / (n + 1)
    ok[:, 0] = True  # the most confident is always committed
    count = ok.long().cumprod(dim=1).sum(dim=1, keepdim=True)  # (B, 1)
    return (_rank(conf, state.masked) < count) & state.masked


def localleap(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """Anchors (c >= tau_hi) plus their neighbours within radius that reach tau_lo."""
    anchors = (conf >= cfg.leap_tau_hi) & state.masked
    size = 2 * cfg.leap_radius + 1
    near = F.max_pool1d(anchors[:, None].float(), size, stride=1, padding=cfg.leap_radius)[:, 0]
    return (anchors | ((near > 0) & (conf >= cfg.leap_tau_lo))) & state.masked


def stdec(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """STDec: a per-position threshold, lowered near decoded tokens and for stable predictions."""
    tau = stdec_thresholds(state.decoded, state.block_start, conf.shape[1], cfg, state.seq_end)
    tau = torch.where(state.stable >= cfg.window, cfg.rho * tau, tau)  # temporal relax
    return (conf >= tau) & state.masked


def eb(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """EB-sampler (Ben-Hamu et al. 2025): sort the masked positions by entropy, ascending, and
    commit the longest prefix whose entropies sum, less the largest of them, to at most
    eb_gamma: sum_{j<=k} H_(j) - H_(k) <= gamma, so the first always goes."""
    ranked = torch.sort(state.entropy.masked_fill(~state.masked, math.inf), dim=1).values
    before = ranked.cumsum(dim=1) - ranked  # entropy of the positions ahead in the order
    count = (before <= cfg.eb_gamma).sum(dim=1, keepdim=True)  # before is non-decreasing
    return (_rank(-state.entropy, state.masked) < count) & state.masked


def klass(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """KLASS (Kim et al. 2025): commit positions with confidence above klass_tau whose
    distribution moved less than klass_kl (KL to the previous step) for klass_steps steps
    running. memory counts those steps."""
    calm = torch.where(state.kl < cfg.klass_kl, state.memory + 1, 0)
    state.memory = calm
    return (conf > cfg.klass_tau) & (calm >= cfg.klass_steps) & state.masked


def wino(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """WINO (Hong et al. 2025), wide in: draft every masked position with confidence above
    wino_draft; narrow out: in a step that drafts more than one token, mask again earlier
    drafts of the block whose token the model now gives less than wino_verify, at most
    (drafted now - 1) of them, least probable first, so every step gains a token.

    WINO reads that probability from a shadow copy of the block, all masks, appended to the
    forward with an attention pattern of its own; here it is the block's own distribution at
    the drafted position, where the model sees the token (one forward, every cache mode
    unchanged, but a weaker check: a model that copies its input never doubts). WINO's cap
    on drafts per step (at most 20) is left out."""
    commit = (conf > cfg.wino_draft) & state.masked
    drafted_now = commit.sum(dim=1, keepdim=True)  # (B, 1)
    doubt = state.drafted & ~state.masked & (state.token_conf < cfg.wino_verify)
    order = _rank(-state.token_conf, doubt)  # 0 = least probable doubted draft
    state.remask = doubt & (order < drafted_now - 1)
    return commit


def credit(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """CreditDecoding (Wang et al. 2025): a position's credit decays by credit_decay each step
    and gains conf ** credit_alpha while its prediction holds (it restarts when the
    prediction changes); the credit lifts the predicted token's logit by
    credit_lambda * log(1 + credit), and the position commits when that fused probability
    (or the plain one) reaches credit_tau."""
    gain = conf.pow(cfg.credit_alpha)
    held = state.stable > 1  # the same prediction as at the previous step
    state.memory = torch.where(held, cfg.credit_decay * state.memory + gain, gain)
    boost = torch.exp(cfg.credit_lambda * torch.log1p(state.memory))
    fused = conf * boost / (1 - conf + conf * boost)  # softmax with one logit raised
    return (torch.maximum(conf, fused) >= cfg.credit_tau) & state.masked


def select(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """The configured rule followed by the at-least-one rule. Returns (B, L) bool."""
    rule = registry.get(cfg.policy).resolve()
    return at_least_one(rule(conf, pred, state, cfg), conf, state.masked)


def at_least_one(commit: Tensor, conf: Tensor, masked: Tensor) -> Tensor:
    """A row with masks left but nothing picked commits its most confident position.

    argmax returns the first maximum, so ties go to the leftmost position.
    """
    best = conf.masked_fill(~masked, -math.inf).argmax(dim=1, keepdim=True)  # (B, 1)
    starved = masked.any(dim=1, keepdim=True) & ~commit.any(dim=1, keepdim=True)
    return commit.scatter(1, best, commit.gather(1, best) | starved)


def stdec_thresholds(decoded: Tensor, block_start: int | Tensor, length: int, cfg: DecodeConfig,
                     seq_end: Tensor | None = None) -> Tensor:
    """Spatial thresholds for the block: Gaussian-smoothed tau_low / tau_high map. (B, L).

    block_start and seq_end may be (B, 1): rows at different blocks, of different lengths.
    """
    batch, total = decoded.shape
    if cfg.tau_low == cfg.tau_high:  # spatial half off: skip the rounding of the smoothing
        return torch.full((batch, length), cfg.tau_high, device=decoded.device)
    kernel = gaussian_kernel(cfg.sigma, decoded.device)  # (K,)
    radius = kernel.shape[0] // 2
    # clamping the window's indices into each row's sequence replicates its edges
    idx = torch.arange(-radius, length + radius, device=decoded.device) + block_start
    last = total - 1 if seq_end is None else seq_end - 1
    idx = torch.minimum(idx.clamp(min=0), torch.as_tensor(last, device=decoded.device))
    window = decoded.gather(1, idx.expand(batch, -1))  # (B, L + 2r)
    base = torch.where(window, cfg.tau_low, cfg.tau_high).float()
    return F.conv1d(base[:, None], kernel[None, None])[:, 0]


@lru_cache(maxsize=16)
def gaussian_kernel(sigma: float, device: torch.device) -> Tensor:
    """Normalised Gaussian of width sigma over offsets -ceil(3 sigma) .. ceil(3 sigma)."""
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).float().to(device)


def _rank(conf: Tensor, masked: Tensor) -> Tensor:
    """Rank of each position by confidence among the masked ones (0 = most confident).

    Stable sort: equal confidences keep left-to-right order.
    """
    order = torch.sort(conf.masked_fill(~masked, -math.inf), dim=1, descending=True, stable=True)
    positions = torch.arange(conf.shape[1], device=conf.device).expand_as(conf)
    return torch.empty_like(order.indices).scatter_(1, order.indices, positions)
