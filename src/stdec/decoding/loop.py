"""decode(): a batch of prompts through the engine, returned in order.

The engine (stdec.decoding.engine) is the one decode loop; this is its batch face for
stdec.generate, bench, tune and lm-eval: submit every prompt, run to completion, stack.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stdec.decoding.config import DecodeConfig
from stdec.decoding.engine import Engine, RowStats, Trace, confidence, eos_stop
from stdec.errors import StdecError

__all__ = ["DecodeOutput", "RowStats", "Trace", "confidence", "decode", "eos_stop"]


@dataclass
class DecodeOutput:
    ids: Tensor  # (B, G) generated ids
    stats: list[RowStats]
    trace: Trace | None


def decode(model, prompt_ids: Sequence[Sequence[int]],
           cfg: DecodeConfig | Sequence[DecodeConfig], *,
           eos_ids: Sequence[int] = ()) -> DecodeOutput:
    """Generate gen_length tokens after each prompt (token ids, any lengths).

    `cfg` is one DecodeConfig for every row, or one per row (e.g. each with its own seed;
    they must share gen_length). The model's config gives the mask, pad and EOS ids;
    `eos_ids` adds end tokens (e.g. <|eot_id|>). Inputs are assumed validated
    (stdec.generate does it). Every row gets a slot, so all decode at once.
    """
    configs = [cfg] * len(prompt_ids) if isinstance(cfg, DecodeConfig) else list(cfg)
    if len(configs) != len(prompt_ids) or len({c.gen_length for c in configs}) != 1:
        raise StdecError("decode needs one DecodeConfig, or one per prompt with one gen_length.")
    longest = max(len(p) + c.gen_length for p, c in zip(prompt_ids, configs, strict=True))
    engine = Engine(model, max_batch=len(prompt_ids), max_length=longest, eos_ids=eos_ids)
    requests = [engine.submit(p, c) for p, c in zip(prompt_ids, configs, strict=True)]
    engine.run()
    for r in requests:
        if r.state != "done":
            raise StdecError(f"decoding prompt {requests.index(r)} failed: {r.error}.")
    ids = torch.tensor([r.ids for r in requests], dtype=torch.long, device=model.device)
    trace = None
    if configs[0].trace:
        trace = Trace(torch.cat([r.trace.step for r in requests]),
                      torch.cat([r.trace.confidence for r in requests]))
    return DecodeOutput(ids, [r.stats for r in requests], trace)
