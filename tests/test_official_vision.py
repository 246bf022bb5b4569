"""LLaDA-V's and LaViDa's forward logits against their official code's, stored at tiny random
weights by tests/official/vision_logits.py (its docstring says how they were made): single
images, text only, two images in anyres and in pad mode; LaViDa with its prefix-LM attention
and without it. Only the stored files are read here."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stdec.decoding.config import DecodeConfig
from stdec.decoding.runner import ModelRunner
from stdec.decoding.scheduler import Request, Sequences
from stdec.models import load_model

HERE = Path(__file__).parent / "fixtures" / "official" / "vision_logits"
MODELS = sorted(p.name for p in HERE.iterdir() if (p / "cases.pt").is_file()) \
    if HERE.is_dir() else []
GEN = 8


def picture(w: int, h: int, seed: int) -> Image.Image:  # the generator's own images
    g = np.random.default_rng(seed)
    return Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8))


IMAGES = {(500, 300): 1, (300, 420): 2, (384, 384): 3}


@pytest.fixture(scope="module", params=MODELS)
def stored(request):
    folder = HERE / request.param
    return request.param, load_model(folder, dtype="float32"), torch.load(folder / "cases.pt")


def official_cases(stored):
    name, _, cases = stored
    return [(name, case, c) for case, c in cases.items()]


@torch.no_grad()
def logits_of(model, ids, images, config: DecodeConfig, answer=None) -> torch.Tensor:
    """The engine's own full forward over prompt | answer (GEN masks unless given; the
    prefix-LM mask when the request decodes under it)."""
    r = Request(ids, config, images=images or None)
    seqs = Sequences(1, 8192, model.config.mask_token_id, model.device)
    runner = ModelRunner(model, seqs, max_batch=1, max_length=8192)
    if images:
        runner.expand(r)
        runner.place(r, 0)
    P = len(r.prompt)
    seqs.x[0, :P] = torch.tensor(r.prompt)
    if answer is not None:
        seqs.x[0, P:P + GEN] = torch.tensor(answer)
    r.slot, r.block = 0, 0
    keys = P + GEN
    cols = torch.arange(keys)[None]
    mask = runner._prefix_lm_mask([r], cols, keys) if runner.prefix_lm(r) else None
    x = seqs.x[:, :keys]
    if r.features is not None:
        return model(x, attention_mask=mask, image_features=runner.features.flatten(0, 1))[0]
    return model(x, attention_mask=mask)[0]


@pytest.mark.skipif(not MODELS, reason="no stored official logits")
def test_logits_match_the_official_code(stored):
    name, model, cases = stored
    worst = 0.0
    for case, c in cases.items():
        images = [picture(w, h, IMAGES[(w, h)]) for w, h in c["sizes"]]
        cfg = DecodeConfig(policy="threshold", gen_length=GEN, block_length=GEN,
                           image_mode=c["image_mode"], prefix_lm=c.get("prefix_lm"))
        if images:
            assert model.prompt_length(c["ids"], images, c["image_mode"]) == c["length"], case
        ours = logits_of(model, c["ids"], images, cfg, c.get("answer"))
        assert ours.shape[0] == c["length"] + GEN, case
        err = difference(model, ours, c)
        worst = max(worst, err)
        assert err < 1e-4, f"{name} {case}: {err:.2e}"
        if c.get("prefix_lm") is not None:  # and the other attention is told apart
            other = replace(cfg, prefix_lm=not c["prefix_lm"])
            far = difference(model, logits_of(model, c["ids"], images, other, c.get("answer")), c)
            assert far > 1e-3, f"{name} {case}: the other attention is within {far:.2e}"
    print(f"{name}: worst |logit difference| {worst:.2e} over {len(cases)} cases")


def difference(model, ours: torch.Tensor, c: dict) -> float:
    """Max |ours - official| over the stored positions."""
    shift = model.logits_shift  # stdec returns Dream's logits already shifted
    pos = torch.tensor(c["positions"])
    keep = pos + shift < ours.shape[0]  # the official unshifted last row has no counterpart
    return (ours[(pos + shift)[keep]] - c["logits"][keep]).abs().max().item()
