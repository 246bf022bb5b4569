"""The block/step loop: forward, select, commit, cache refresh, stats and trace.

The loop owns the model and the policy; neither knows the other. Rows of a batch are
left-padded to one length, so that every row's generation region (and its blocks) sits
at the same columns; each row's rotary positions start at its first real token and
padding is masked out of attention, so a row decodes as it would alone.
"""

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stdec.decoding.config import DecodeConfig
from stdec.decoding.policies import StepState, select

__all__ = ["DecodeOutput", "RowStats", "Trace", "decode"]


@dataclass
class RowStats:
    nfe: int  # forward passes this row took part in
    gen_tokens: int  # generated tokens before the first EOS
    tpf: float  # gen_tokens / nfe
    wall_time: float  # seconds from the start of the decode until this row finished
    tokens_per_s: float  # gen_tokens / wall_time


@dataclass
class Trace:
    step: Tensor  # (B, G) int: the row's step (its NFE count, from 1) that committed each position
    confidence: Tensor  # (B, G) float: confidence at commit; NaN where EOS stop filled it


@dataclass
class DecodeOutput:
    ids: Tensor  # (B, G) generated ids
    stats: list[RowStats]
    trace: Trace | None


def confidence(logits: Tensor, mask_id: int, temperature: float,
               generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Prediction and its probability for each position. logits (B, L, V) -> (B, L), (B, L).

    The mask token is never a prediction (committing it would undo the commit). With a
    temperature the prediction is Gumbel-max sampled in float64 and the confidence is its
    probability under the model, as in LLaDA.
    """
    logits = logits.float()
    logits[..., mask_id] = -math.inf
    if temperature > 0:
        u = torch.rand(logits.shape, generator=generator, device=logits.device,
                       dtype=torch.float64)
        pred = (logits.double() / temperature - torch.log(-torch.log(u))).argmax(-1)
    else:
        pred = logits.argmax(-1)
    log_p = logits.gather(-1, pred[..., None])[..., 0] - logits.logsumexp(-1)
    return log_p.exp(), pred


def eos_stop(gen: Tensor, eos_ids: Tensor, mask_id: int) -> Tensor:
    """Masks after a row's first EOS, once everything before that EOS is decoded. (B, G) bool."""
    G = gen.shape[1]
    pos = torch.arange(G, device=gen.device)
    first_eos = torch.where(torch.isin(gen, eos_ids), pos, G).min(dim=1, keepdim=True).values
    is_mask = gen == mask_id
    first_mask = torch.where(is_mask, pos, G).min(dim=1, keepdim=True).values
    return (first_eos < first_mask) & (pos > first_eos) & is_mask


@torch.inference_mode()
def decode(model, prompt_ids: Sequence[Sequence[int]], cfg: DecodeConfig, *,
           eos_ids: Sequence[int] = ()) -> DecodeOutput:
    """Generate cfg.gen_length tokens after each prompt (token ids, any lengths).

    The model's config gives the mask, pad and EOS ids; `eos_ids` adds end tokens (e.g.
    <|eot_id|>). Inputs are assumed validated (stdec.generate does it).
    """
    mc, device = model.config, model.device
    mask_id, G, bl = mc.mask_token_id, cfg.gen_length, cfg.block_length
    B, P = len(prompt_ids), max(len(p) for p in prompt_ids)
    T = P + G
    x = torch.full((B, T), mask_id, dtype=torch.long)
    pads = [P - len(p) for p in prompt_ids]
    for b, p in enumerate(prompt_ids):
        x[b, : pads[b]] = mc.pad_token_id
        x[b, pads[b] : P] = torch.tensor(p, dtype=torch.long)
    x = x.to(device)
    n_pad = torch.tensor(pads, device=device)[:, None]
    cols = torch.arange(T, device=device)[None]
    pos = (cols - n_pad).clamp(min=0)  # (B, T): each row's positions start at its first token
    keys = (cols >= n_pad) if any(pads) else None  # padding masked out of attention
    eos = torch.tensor(sorted({mc.eos_token_id, *eos_ids}), device=device)
    cache = model.new_cache(B, T) if cfg.cache != "none" else None
    gen = torch.Generator(device).manual_seed(cfg.seed) if cfg.temperature > 0 else None
    # shifted models (Dream) predict position i from hidden state i - 1: cached steps feed
    # `shift` extra positions on the left (s >= 1: prompts are non-empty)
    shift = getattr(model, "logits_shift", 0)

    nfe = torch.zeros(B, dtype=torch.long, device=device)
    last_step = torch.zeros(B, dtype=torch.long, device=device)
    trace_step = torch.full((B, G), -1, dtype=torch.long, device=device)
    trace_conf = torch.full((B, G), math.nan, device=device)
    marks: list[float] = []  # host time after each global step
    total_steps = 0
    _sync(device)
    start = time.perf_counter()
    for s in range(P, T, bl):
        e = s + bl
        stable = torch.zeros(B, bl, dtype=torch.long, device=device)
        prev = torch.full((B, bl), -1, dtype=torch.long, device=device)
        step = 0
        while True:
            masked = x[:, s:e] == mask_id  # (B, L)
            active = masked.any(dim=1)  # (B,)
            work_left = bool(active.any())  # the step's one host sync: is there work left?
            if len(marks) < total_steps:
                marks.append(time.perf_counter())
            if not work_left:
                break
            if cache is None or step == 0:  # full forward; with a cache it refreshes all K/V
                logits = model(x, position_ids=pos, attention_mask=keys, cache=cache,
                               logits_slice=slice(s, e))
            elif cfg.cache == "prefix":  # the block and everything after it
                logits = model(x[:, s - shift :], position_ids=pos[:, s - shift :],
                               attention_mask=keys, cache=cache, cache_start=s - shift,
                               logits_slice=slice(shift, shift + bl))
            else:  # dual: the block alone, over cached prefix and suffix
                logits = model(x[:, s - shift : e], position_ids=pos[:, s - shift : e],
                               attention_mask=keys, cache=cache, cache_start=s - shift,
                               logits_slice=slice(shift, shift + bl))
            conf, pred = confidence(logits, mask_id, cfg.temperature, gen)
            stable = torch.where(pred == prev, stable + 1, 1)
            prev = pred
            state = StepState(masked, x != mask_id, s, stable, step)
            commit = select(conf, pred, state, cfg)
            x[:, s:e] = torch.where(commit, pred, x[:, s:e])
            nfe += active
            step += 1
            total_steps += 1
            last_step = torch.where(active, total_steps, last_step)
            if cfg.trace:
                g = slice(s - P, e - P)
                trace_step[:, g] = torch.where(commit, nfe[:, None], trace_step[:, g])
                trace_conf[:, g] = torch.where(commit, conf, trace_conf[:, g])
            if cfg.stop_at_eos:
                fill = eos_stop(x[:, P:], eos, mask_id)
                x[:, P:] = x[:, P:].masked_fill(fill, mc.eos_token_id)
                if cfg.trace:
                    trace_step.copy_(torch.where(fill, nfe[:, None], trace_step))

    ids = x[:, P:]
    first_eos = torch.where(torch.isin(ids, eos), torch.arange(G, device=device), G).min(1).values
    marks_t = torch.tensor([start, *marks], dtype=torch.float64)
    wall = (marks_t[last_step.cpu()] - start).tolist()
    stats = [
        RowStats(n, k, k / n, w, k / w if w > 0 else 0.0)
        for n, k, w in zip(nfe.tolist(), first_eos.tolist(), wall, strict=True)
    ]
    trace = Trace(trace_step, trace_conf) if cfg.trace else None
    return DecodeOutput(ids.clone(), stats, trace)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
