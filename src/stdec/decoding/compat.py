"""compat "fast-dllm": Fast-dLLM's Dream block generation, step for step, for reproducing its
published figures (NVlabs/Fast-dLLM, dream/model/generation_utils_block.py).

For Dream (logits shifted: position i is read from hidden state i - 1) with the prefix and
dual caches, that code differs from stdec's semantics (compat "none") in four ways:
- the refresh, a block's first forward, commits the block's first position s, its
  prediction whatever its confidence, and nothing else;
- the block steps feed from s, not from s - 1: position s - 1 keeps the K/V of the refresh,
  and s's logits come from its own hidden state (never read: s is committed);
- a confidence is the probability under a softmax over the whole vocabulary (the mask id's
  mass included), in the logits' own dtype, and the threshold is compared in that dtype;
- the fixed rule is its steps path: a block of `steps_per_block` S forwards, the refresh
  and S - 1 steps; step i (from 1) commits the int(m (1 - t_i+1 / t_i)) masked positions of
  lowest entropy, m the block's masks and t = linspace(1, 1e-3, S + 1), and the last step
  every mask left; a step may commit nothing.
The threshold rule is the same in both (every masked position at or above tau, and the
most confident when none is). Where the reference would write the mask id back (its argmax
at a position), stdec commits the best other token: the mask is never a prediction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stdec.decoding import registry
from stdec.errors import StdecError

if TYPE_CHECKING:  # torch is imported where it runs: DecodeConfig (and --help) reads check
    from torch import Tensor

    from stdec.decoding.config import DecodeConfig
    from stdec.decoding.policies import StepState

__all__ = ["COMPAT_MODES", "check", "check_model", "commit", "feeds_from", "probabilities"]

COMPAT_MODES = ("none", "fast-dllm")
RULES = ("threshold", "fixed")  # the reference's confidence_threshold and its steps path
EPS = 1e-3  # the reference's last timestep (DreamGenerationConfig.eps)
WHY = "compat fast-dllm follows Fast-dLLM's Dream block generation"


def check(cfg: DecodeConfig):
    """What compat needs of the other options (the model is checked by check_model)."""
    if cfg.compat not in COMPAT_MODES:
        raise StdecError(f"unknown compat {cfg.compat!r}; choose one of "
                         f"{', '.join(COMPAT_MODES)}.")
    if cfg.compat == "none":
        return
    rule = registry.get(cfg.policy).name
    G, bl = cfg.gen_length, cfg.block_length
    if cfg.cache not in ("prefix", "dual"):
        # without a cache Fast-dLLM runs another generate (no blocks, a cap per step)
        raise StdecError(f"{WHY}, which has the prefix and dual caches only; got cache "
                         f"{cfg.cache!r}: set cache prefix or dual, or compat none.")
    if rule not in RULES:
        raise StdecError(f"{WHY}, whose rules are threshold and fixed (its steps path); got "
                         f"policy {cfg.policy!r}: choose one of them, or compat none.")
    if cfg.temperature > 0:
        raise StdecError(f"{WHY} greedily; got temperature {cfg.temperature}: set temperature "
                         "0, or compat none.")
    if G % bl or bl < 2:
        raise StdecError(f"{WHY}, which needs blocks of 2 or more positions that divide "
                         f"gen_length; got block_length {bl} and gen_length {G}.")
    if rule == "fixed" and cfg.params.steps_per_block(cfg) < 2:
        raise StdecError(f"{WHY}, whose steps path leaves a block of one step undecoded; give "
                         f"each block 2 or more steps (steps >= {2 * G // bl}).")


def check_model(cfg: DecodeConfig, model):
    """compat fast-dllm is for a model that reads position i from hidden state i - 1."""
    if cfg.compat == "fast-dllm" and model.logits_shift != 1:
        raise StdecError(f"{WHY}, for Dream, which predicts position i from hidden state "
                         "i - 1; this model predicts it from i: use compat none.")


def feeds_from(cfg: DecodeConfig, shift: int) -> int:
    """How many positions before the block a cached step feeds: the model's shift, or none
    under compat fast-dllm (s - 1 keeps the refresh's K/V)."""
    return 0 if cfg.compat == "fast-dllm" else shift


def probabilities(logits: Tensor) -> Tensor:
    """Softmax over the whole vocabulary (the mask id included), in the logits' dtype."""
    import torch

    return torch.softmax(logits, dim=-1)


def commit(probs: Tensor, pred: Tensor, state: StepState, cfg: DecodeConfig
           ) -> tuple[Tensor, Tensor]:
    """(confidence in float32, commit mask) of a block under compat fast-dllm. probs
    (B, L, V) from probabilities(); pred (B, L) the prediction (the mask id never one)."""
    import torch

    from stdec.decoding.policies import _rank, select

    conf = probs.gather(-1, pred[..., None])[..., 0]
    masked = state.masked
    if registry.get(cfg.policy).name == "fixed":
        neg_entropy = (probs * torch.log(probs + 1e-10)).sum(-1)
        picked = _rank(neg_entropy, masked) < _step_count(masked, state.step, cfg)
        picked &= masked
    else:
        picked = select(conf, pred, state, cfg)
    first = torch.arange(masked.shape[1], device=masked.device) == 0
    picked = torch.where(torch.as_tensor(state.step, device=masked.device) == 0,
                         first & masked, picked)  # the refresh: the block's first alone
    return conf.float(), picked


def _step_count(masked: Tensor, step: int | Tensor, cfg: DecodeConfig) -> Tensor:
    """(B, 1) positions step `step` commits on the reference's schedule."""
    import torch

    S = cfg.params.steps_per_block(cfg)
    times = torch.linspace(1, EPS, S + 1, device=masked.device)
    i = torch.as_tensor(step, device=masked.device).clamp(1, S - 1).reshape(-1, 1)
    m = masked.sum(dim=1, keepdim=True)
    part = (m / 1 * (1 - times[i + 1] / times[i])).long()  # float32, truncated, as the reference
    return torch.where(i < S - 1, part, m)
