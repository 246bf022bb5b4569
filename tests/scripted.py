"""A scripted model for decoding tests: it ignores its input, and the n-th forward (from 0)
returns, for every fed position, the probabilities written in the script by hand."""

import math

import torch

from stdec.testing import tiny_config

MASK, EOS = 2, 1


class Scripted(torch.nn.Module):
    """`script(n)` gives the n-th forward's distributions: a list, one per position of the
    block, of {token id: probability}; ids not named get probability 0. With a shorter list
    the last entry repeats."""

    logits_shift = 0  # the model interface's traits (stdec/models/interface.py)
    prefix_lm = False
    greedy_first_token = False
    system_prompt = None
    cuda_graphs = True

    def __init__(self, script, vocab: int = 16):
        super().__init__()
        self.config = tiny_config(vocab_size=vocab, mask_token_id=MASK, eos_token_id=EOS,
                                  pad_token_id=EOS)
        self.script, self.calls, self.vocab = script, 0, vocab
        self.fed: list[torch.Tensor] = []  # input ids of each forward
        self.w = torch.nn.Parameter(torch.zeros(1))

    device = property(lambda self: self.w.device)
    dtype = property(lambda self: self.w.dtype)

    def new_cache(self, batch, length):
        return None

    def forward(self, ids, *, logits_slice=None, **_):
        n = ids.shape[1] if logits_slice is None else len(range(ids.shape[1])[logits_slice])
        dists = self.script(self.calls)
        self.calls += 1
        self.fed.append(ids.clone())
        logits = torch.full((ids.shape[0], n, self.vocab), -math.inf)
        for i in range(n):
            for tok, p in dists[min(i, len(dists) - 1)].items():
                logits[:, i, tok] = math.log(p)
        return logits


def peaked(preds: list[int], confs: list[float], vocab: int = 16) -> list[dict[int, float]]:
    """Per position: probability conf on pred, the rest spread evenly over the other
    non-mask ids (so conf is exactly the confidence the loop sees)."""
    out = []
    for pred, conf in zip(preds, confs, strict=True):
        rest = (1 - conf) / (vocab - 2)
        out.append({t: (conf if t == pred else rest) for t in range(vocab) if t != MASK})
    return out
