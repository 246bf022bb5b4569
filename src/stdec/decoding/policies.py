"""Commit rules: small pure functions from (confidence, prediction, state) to a commit mask.

Every rule sees only the active block: `conf` and `pred` are (B, L) for its L positions.
Rules are vectorised over the batch and never synchronise with the host. A new rule is
one function with the signature of `threshold` and one line in `POLICIES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from stdec.decoding.config import DecodeConfig

__all__ = ["POLICIES", "StepState", "at_least_one", "gaussian_kernel", "select", "stdec_thresholds"]


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
    """

    masked: Tensor
    decoded: Tensor
    block_start: int | Tensor
    stable: Tensor
    step: int | Tensor
    seq_end: Tensor | None = None


def fixed(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """LLaDA: commit the k most confident masked positions, k from an even schedule."""
    length, steps = conf.shape[1], cfg.steps_per_block
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


POLICIES: dict[str, Callable[[Tensor, Tensor, StepState, DecodeConfig], Tensor]] = {
    "fixed": fixed,
    "threshold": threshold,
    "factor": factor,
    "localleap": localleap,
    "stdec": stdec,
}


def select(conf: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig) -> Tensor:
    """The configured rule followed by the at-least-one rule. Returns (B, L) bool."""
    return at_least_one(POLICIES[cfg.policy](conf, pred, state, cfg), conf, state.masked)


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
