"""Half precision against float32: RMSNorm and rotary exactly as a float32-then-cast
reference, whole forwards and decodes within a stated tolerance, and the trained testbed's
bfloat16 decodes unchanged.

Tolerances (max |logit error| / max |logit|, and max probability error), about 3x what the
tiny random models show: bfloat16 (8 mantissa bits) 2 % and 0.12; float16 (11 bits) 0.3 %
and 0.02.
"""

import pytest
import torch

import stdec
from stdec.decoding.config import DecodeConfig
from stdec.models import load_model
from stdec.models.layers import RMSNorm, apply_rope
from stdec.testing import random_dream_model, random_model, tiny_config, tiny_dream_config

HALF = [torch.bfloat16, torch.float16]
TOL = {torch.bfloat16: (0.02, 0.12), torch.float16: (0.003, 0.02)}


def ref_rmsnorm(x, weight, eps):
    """Normalise in float32, cast to x's dtype, then scale by the weight in that dtype."""
    x32 = x.to(torch.float32)
    normed = x32 / torch.sqrt((x32 * x32).sum(-1, keepdim=True) / x.shape[-1] + eps)
    return weight * normed.to(x.dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_rmsnorm_is_float32_then_cast(dtype):
    gen = torch.Generator().manual_seed(0)
    # spread over magnitudes, up to the hundreds that real LLM activations reach: a square
    # above 65504 overflows float16, and squares in bfloat16 lose all but 8 bits
    x = torch.randn(6, 9, 256, generator=gen) * torch.logspace(-2, 2.6, 6)[:, None, None]
    norm = RMSNorm(256, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(256, generator=gen) + 0.5)
    norm = norm.to(dtype)
    got = norm(x.to(dtype))
    assert got.dtype == dtype
    want = ref_rmsnorm(x.to(dtype), norm.weight.detach(), 1e-5)
    assert torch.isfinite(want).all()
    # the float32 sums may round differently in their last bit: allow one half-precision ulp
    torch.testing.assert_close(got, want, rtol=2 ** -7 if dtype == torch.bfloat16 else 2 ** -10,
                               atol=0)


@pytest.mark.parametrize("dtype", HALF)
def test_rotary_is_float32_then_cast(dtype):
    gen = torch.Generator().manual_seed(1)
    B, H, L, D = 2, 3, 50, 16
    x = (torch.randn(B, H, L, D, generator=gen) * 30).to(dtype)
    pos = torch.arange(1000, 1000 + L, dtype=torch.float64)  # far positions: large angles
    inv = 1.0 / 10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.cat([pos[:, None] * inv, pos[:, None] * inv], -1)  # (L, D), rotate-half
    cos, sin = ang.cos().float()[None, None], ang.sin().float()[None, None]
    got = apply_rope(x, cos, sin)
    assert got.dtype == dtype
    x32 = x.float()
    rotated = torch.cat([-x32[..., D // 2 :], x32[..., : D // 2]], -1)
    want = (x32 * cos + rotated * sin).to(dtype)
    assert torch.equal(got, want)


def models():
    return {"llada": lambda: random_model(tiny_config(), peak=16.0),
            "dream": lambda: random_dream_model(tiny_dream_config(), peak=16.0)}


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_half_precision_forward_is_within_tolerance(arch, dtype):
    make = models()[arch]
    ids = torch.randint(3, 300, (3, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = make()(ids)
        got = make().to(dtype)(ids)
    assert got.dtype == dtype
    rel, prob = TOL[dtype]
    assert (got.float() - ref).abs().max() <= rel * ref.abs().max()
    assert (got.float().softmax(-1) - ref.softmax(-1)).abs().max() <= prob


def test_float16_forward_survives_large_activations():
    """Hidden states in the hundreds (as in real LLMs): squares overflow float16 unless the
    norm upcasts."""
    model = random_model(tiny_config(), peak=16.0)
    with torch.no_grad():
        model.model.transformer.wte.weight.mul_(400)
    ids = torch.randint(3, 300, (2, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(ids)
        got = model.to(torch.float16)(ids).float()
    assert torch.isfinite(got).all()
    rel, prob = TOL[torch.float16]
    assert (got - ref).abs().max() <= rel * ref.abs().max()
    assert (got.softmax(-1) - ref.softmax(-1)).abs().max() <= prob


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_load_holds_the_checkpoint_values(checkpoint, dtype):
    full = load_model(checkpoint, dtype="float32", device="cpu")
    half = load_model(checkpoint, dtype=dtype, device="cpu")
    want = getattr(torch, dtype)
    assert half.dtype == want
    for (name, a), (_, b) in zip(full.state_dict().items(), half.state_dict().items(),
                                 strict=True):
        assert b.dtype == want and torch.equal(b, a.to(want)), name
    ids = torch.randint(3, 300, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref, got = full(ids), half(ids).float()
    rel, _ = TOL[want]
    assert (got - ref).abs().max() <= rel * ref.abs().max()


@pytest.fixture(scope="module")
def testbed():
    from stdec.api import resolve_model_path

    path = resolve_model_path("testbed")
    if not (path / "model.safetensors").is_file():
        pytest.skip("no bundled testbed in this install")
    return path


def test_trained_testbed_decodes_the_same_in_half_precision(testbed):
    """A trained model is confident: its half-precision decodes equal the float32 ones."""
    from stdec.tasks import get_task

    task = get_task("lists")
    prompts = [p.prompt for p in task.problems("dev")[:2]]
    cfg = DecodeConfig(policy="stdec", cache="dual", gen_length=64, block_length=32)
    model, tok = stdec.load(testbed, dtype="float32", device="cpu")
    ref = stdec.generate(model, tok, prompts, cfg, chat=True)
    half = load_model(testbed, dtype="bfloat16", device="cpu")
    out = stdec.generate(half, tok, prompts, cfg, chat=True)
    assert out.ids.tolist() == ref.ids.tolist()
    assert [s.nfe for s in out.stats] == [s.nfe for s in ref.stats]


@pytest.mark.parametrize("dtype, share", [(torch.bfloat16, 0.9), (torch.float16, 0.95)])
def test_random_model_decodes_mostly_agree_in_half_precision(dtype, share):
    """A random model has near-ties, where rounding may flip a prediction and the rest of the
    block follows it; the share of positions that agree is the tolerance (measured: 0.96 in
    bfloat16, 0.98 in float16)."""
    from stdec.decoding.engine import decode

    prompts = [[5, 9, 33], [7, 101, 54, 8, 12, 40, 41], [77], [60, 61, 62, 63, 64]]
    cfg = DecodeConfig(policy="threshold", tau=0.6, cache="dual", gen_length=32,
                       block_length=8, stop_at_eos=False)
    ref = decode(random_model(tiny_config(), peak=16.0), prompts, cfg).ids
    got = decode(random_model(tiny_config(), peak=16.0).to(dtype), prompts, cfg).ids
    assert (got == ref).float().mean() >= share
