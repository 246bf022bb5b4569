"""A plain reference decode shared by the model tests: one row, Python loops, the threshold
rule with the at-least-one rule. Each model's test file supplies its own forward, which
writes attention out with explicit frozen K/V instead of the library's cache."""

import math

import torch

from stdec.decoding import registry
from stdec.decoding.config import DecodeConfig

MASK = 2
# thresholds inside the random models' confidence range, so that steps commit several tokens
LOOSE = dict(tau=0.6, tau_high=0.7, tau_low=0.45, sigma=1.5, rho=0.8, window=2,
             leap_tau_hi=0.7, leap_tau_lo=0.5, factor=2.0)


def own(policy: str, /, **options) -> dict:
    """`options` less those of other rules: a test's settings for several rules at once."""
    return {k: v for k, v in options.items()
            if k in registry.get(policy).options or k in DecodeConfig.shared_fields()}


def config(policy: str, cache: str = "none", **kw) -> DecodeConfig:
    """The policy with the LOOSE settings of its own options, and `kw` over them."""
    return DecodeConfig(policy=policy, cache=cache,
                        **{"gen_length": 24, "block_length": 8, **own(policy, **LOOSE), **kw})


@torch.no_grad()
def reference_decode(model, prompt: list[int], cfg: DecodeConfig, forward,
                     shift: int = 0, greedy_first: bool = False) -> tuple[list[int], int]:
    """(generated ids, NFE). `forward(model, ids, a, b, frozen)` gives the logits of the
    rows fed (a..b) and every layer's K/V; with `shift`, position i is read from row i - 1.
    `greedy_first`: the first forward commits the first generated position alone, by argmax
    (LaViDa-Dream's official generate)."""
    x, P, nfe = prompt + [MASK] * cfg.gen_length, len(prompt), 0
    born: dict[int, int] = {}  # position -> the forward (from 1) that committed it
    for s in range(P, len(x), cfg.block_length):
        e, frozen, step = min(s + cfg.block_length, len(x)), None, 0  # a last block may be short
        while MASK in x[s:e]:
            dkv = cfg.cache == "dkv"
            if cfg.cache == "none" or step == 0 or (dkv and step % cfg.dkv_interval == 0):
                logits, frozen = forward(model, x, 0, len(x), None)  # also refreshes K/V
                logits = logits[s - shift : e - shift]
            elif dkv:  # block tokens committed two or more forwards ago keep cached K/V
                keep = torch.tensor([p >= s and x[p] != MASK and born.get(p, nfe) < nfe
                                     for p in range(len(x))])
                logits, frozen = forward(model, x, s - shift, len(x),
                                         [(k, v, keep) for k, v in frozen])
                logits = logits[: e - s]
            else:
                end = e if cfg.cache == "dual" else len(x)
                logits = forward(model, x, s - shift, end, frozen)[0][: e - s]
            logits[:, MASK] = -math.inf
            probs = torch.softmax(logits, -1)
            todo = [i for i in range(s, e) if x[i] == MASK]
            picks = [i for i in todo if probs[i - s].max() >= cfg.tau]
            if not picks:
                picks = [max(todo, key=lambda i: probs[i - s].max())]
            if greedy_first and nfe == 0:
                picks = [P]
            for i in picks:
                x[i] = int(probs[i - s].argmax())
                born[i] = nfe + 1
            nfe, step = nfe + 1, step + 1
    return x[P:], nfe


def ref_rope(head_dim: int, theta: float, a: int, b: int):
    """Rotate-half rotary embedding for positions a..b, written out."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    ang = torch.arange(a, b).float()[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(v):
        v1, v2 = v[..., : head_dim // 2], v[..., head_dim // 2 :]
        return v * cos + torch.cat([-v2, v1], -1) * sin

    return rope


def ref_attention(q, k, v, frozen, a: int, b: int, kv_list: list, prompt: int | None = None):
    """Attention of the fed rows a..b; K/V outside a..b come from `frozen` (the refresh).
    Appends this layer's full K/V to kv_list. q (1, H, L, D); k, v (1, H_kv, L, D). With
    `prompt` (a prefix LM, LaViDa), fed positions before it attend only to positions before it."""
    if frozen is not None:
        fk, fv, *keep = frozen  # keep (dkv): positions fed whose cached K/V stand
        k = torch.cat([fk[:, :, :a], k, fk[:, :, b:]], dim=2)
        v = torch.cat([fv[:, :, :a], v, fv[:, :, b:]], dim=2)
        if keep:
            k = torch.where(keep[0][:, None], fk, k)
            v = torch.where(keep[0][:, None], fv, v)
    kv_list.append((k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if prompt is not None:
        fed, keys = torch.arange(a, b)[:, None], torch.arange(k.shape[2])[None]
        scores = scores.masked_fill((fed < prompt) & (keys >= prompt), -math.inf)
    o = torch.softmax(scores, dim=-1) @ v
    return o.transpose(1, 2).reshape(1, b - a, -1)
