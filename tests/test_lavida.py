"""LaViDa-LLaDA: the official recipe's token counts, pooled features and the prefix-LM forward
against a plain reference (transformers' SiglipVisionModel, the projector and the pooling
written out, attention with LaViDa's prefix mask), every cache mode and mixed batches through
the engine, the checkpoint layout, and the system prompt."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from reference import config, ref_attention, ref_rope, reference_decode
from transformers import SiglipVisionConfig, SiglipVisionModel

import stdec
from stdec.api import encode
from stdec.decoding.config import CACHE_MODES
from stdec.decoding.engine import decode
from stdec.errors import StdecError
from stdec.models import LaViDaDreamModel, LaViDaModel, LLaDAVModel, load_model
from stdec.models.lavida import SYSTEM_PROMPT, LaViDaConfig, image_token_count
from stdec.models.llada_v import IMAGE_TOKEN_INDEX as IMG
from stdec.models.llada_v import preprocess_image
from stdec.testing import (
    random_llava_checkpoint,
    random_llava_model,
    tiny_config,
    tiny_lavida_config,
    tiny_lavida_dream_config,
)


@pytest.fixture(scope="module")
def lv():
    return random_llava_model(tiny_lavida_config(), peak=16.0)


@pytest.fixture(scope="module", params=["llada", "dream"])
def either(request):
    """LaViDa-LLaDA and LaViDa-Dream (its logits shifted right by one)."""
    cfg = tiny_lavida_config() if request.param == "llada" else tiny_lavida_dream_config()
    return random_llava_model(cfg, peak=16.0)


def picture(w: int, h: int, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g,
                                         dtype=torch.uint8).numpy())


def test_token_counts_of_the_released_models():
    """SigLIP so400m/14 at 384 px, 27x27 vectors a crop pooled to 14x14 (bilinear,
    ceil(27 / 2)), LaViDa's five grids. 384x384 -> grid 1x2 (the first of the least
    wasteful), map 28x14 unpadded to 14x14: 196 + 14 * 15. 768x384 -> 2x1, 14x28: 196 + 14 *
    29. 384x768 -> 1x2, 28x14: 196 + 28 * 15. 1024x768 -> 2x2, map 28x28, rows unpadded to
    int(768 * 28 / 1024) = 21, pad 3 -> 22x28: 196 + 22 * 29."""
    cfg = LaViDaConfig(tiny_config())
    assert (cfg.side, cfg.pooled) == (27, 14)
    assert [image_token_count(s, cfg) for s in [(384, 384), (768, 384), (384, 768),
                                                (1024, 768)]] == [406, 602, 616, 834]
    assert LaViDaConfig(tiny_config(), pool_mode="average").pooled == 13  # avg_pool2d(2)


# toy tower: 32-px tiles, 4x4 vectors pooled to 2x2; grids (32,64) (64,32) (64,64) (96,32)
# (32,96). Tokens = 4 (base) + h * (w + 1) on the pooled, unpadded map.
CASES = [
    # every grid keeps all of 32x32; (32, 64) wastes least and comes first -> 1x2, map 4x2,
    # rows unpadded by (4 - 2) // 2 = 1 -> 2x2 -> 4 + 2 * 3
    ((32, 32), (1, 2), 10),
    ((64, 32), (2, 1), 14),  # exact fit, map 2x4 -> 4 + 2 * 5
    # (96, 32) keeps most (96 x 28); map 2x6; int(30 * 6 / 100) = 1 row, pad (2 - 1) // 2 = 0
    ((100, 30), (3, 1), 18),
    ((30, 100), (1, 3), 22),  # the transpose: map 6x2 -> 4 + 6 * 3
    ((200, 200), (2, 2), 24),  # (64, 64) keeps most; map 4x4 -> 4 + 4 * 5
]


@pytest.mark.parametrize("size,grid,tokens", CASES)
def test_preprocessing_matches_the_official_recipe(lv, size, grid, tokens):
    pixels, got = preprocess_image(picture(*size), lv.config)
    assert got == grid and pixels.shape == (1 + grid[0] * grid[1], 3, 32, 32)
    assert lv.image_token_count(size) == tokens
    with torch.no_grad():
        assert lv.image_features(picture(*size)).shape == (tokens, 64)


# ---- the forward against a plain reference ----

def ref_features(model: LaViDaModel, image: Image.Image) -> torch.Tensor:
    """transformers' SiglipVisionModel (second-to-last layer), the projector, a bilinear
    resize of each crop's 4x4 map to 2x2, the base crop then the tiles' rows each closed by
    the newline (grids here need no unpadding)."""
    cfg = model.config
    sig = SiglipVisionModel(SiglipVisionConfig(**{**cfg.vision, "num_hidden_layers": 3},
                                               vision_use_head=False)).eval()
    prefix = "vision_model." if hasattr(sig, "vision_model") else ""
    sig.load_state_dict({prefix + k: v for k, v in model.vision_tower.state_dict().items()},
                        strict=False)  # layer 2 stays random: it must not matter
    pixels, (cols, rows) = preprocess_image(image, cfg)
    hidden = sig(pixels, output_hidden_states=True).hidden_states[-2]  # (n, 16, 32)
    p = model.mm_projector
    x = F.linear(F.gelu(F.linear(hidden, p[0].weight, p[0].bias)), p[2].weight, p[2].bias)
    maps = x.view(-1, 4, 4, x.shape[-1]).permute(0, 3, 1, 2)
    pooled = F.interpolate(maps, size=[2, 2], mode="bilinear").permute(0, 2, 3, 1)  # (n,2,2,d)
    tiles = pooled[1:].view(rows, cols, 2, 2, -1)
    lines = []
    for r in range(rows):
        for y in range(2):
            lines += [tiles[r, c, y] for c in range(cols)] + [model.image_newline[None]]
    return torch.cat([pooled[0].flatten(0, 1), *lines])


def ref_forward(model, table: torch.Tensor, prompt: int):
    """reference_decode's forward for LaViDa (LLaDA or Dream inside): the fed rows a..b over
    the frozen rest, image vectors for negative ids, and the prefix mask: fed positions before
    `prompt` attend only to the prompt. Dream's logits come back unshifted (row j from hidden
    state a + j), as reference_decode expects."""
    lm = model.language_model
    dream = hasattr(lm, "lm_head")
    hd = lm.config.head_dim

    def forward(_, ids: list[int], a: int, b: int, frozen):
        rope = ref_rope(hd, lm.config.rope_theta, a, b)
        wte = lm.get_input_embeddings().weight
        h = torch.stack([table[-1 - i] if i < 0 else wte[i] for i in ids[a:b]])[None]
        kv = []
        blocks = lm.model.layers if dream else lm.model.transformer.blocks
        for i, blk in enumerate(blocks):
            att = blk.self_attn if dream else blk
            x = (blk.input_layernorm if dream else blk.attn_norm)(h)
            q, k, v = (p(x).view(1, b - a, -1, hd).transpose(1, 2) for p in
                       (att.q_proj, att.k_proj, att.v_proj))
            out = ref_attention(rope(q), rope(k), v, frozen and frozen[i], a, b, kv, prompt)
            h = h + (att.o_proj if dream else att.attn_out)(out)
            if dream:
                h = h + blk.mlp(blk.post_attention_layernorm(h))
            else:
                x = blk.ff_norm(h)
                h = h + blk.ff_out(F.silu(blk.ff_proj(x)) * blk.up_proj(x))
        if dream:
            return lm.lm_head(lm.model.norm(h))[0], kv
        t = lm.model.transformer
        return t.ff_out(t.ln_f(h))[0], kv

    return forward


@torch.no_grad()
def test_forward_with_the_prefix_mask_equals_the_reference(either):
    lv = either
    images = [picture(64, 32, seed=1), picture(32, 64, seed=2)]  # 2x1 and 1x2 grids
    (row,), table = lv.encode_prompts([[5, 9, IMG, 33, 7, IMG, 101]], [images])
    ref_table = torch.cat([ref_features(lv, im) for im in images])
    assert len(row) == 5 + 14 + 16  # 1x2: map 4x2 -> 4 + 4 * 3
    torch.testing.assert_close(table, ref_table, atol=1e-5, rtol=0)
    P, x = len(row), row + [2] * 8
    pos = torch.arange(len(x))
    mask = (pos[:, None] >= P) | (pos[None] < P)
    ours = lv(torch.tensor([x]), image_features=table, attention_mask=mask[None])[0]
    theirs, _ = ref_forward(lv, ref_table, P)(None, x, 0, len(x), None)
    if lv.logits_shift:  # Dream: position i's logits from hidden state i - 1
        theirs = torch.cat([theirs[:1], theirs[:-1]])
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    # the prompt's logits do not depend on what is generated after it
    other = lv(torch.tensor([row + [7] * 8]), image_features=table, attention_mask=mask[None])
    torch.testing.assert_close(other[0, :P], ours[:P], atol=1e-6, rtol=0)


@pytest.mark.parametrize("prefix_lm", [None, False])
@pytest.mark.parametrize("cache", CACHE_MODES)
def test_every_cache_mode_decodes_as_the_reference_with_the_prefix_lm_or_without(
        either, cache, prefix_lm):
    """None: the model's prefix LM (LaViDa-Dream's first token taken alone); False: every
    position attends to all, and no first token is taken alone."""
    lv = either
    image = picture(64, 32, seed=6)
    (row,), table = lv.encode_prompts([[5, 9, IMG, 33, 7]], [[image]])
    with torch.no_grad():
        ref_table = ref_features(lv, image)
    cfg = config("threshold", cache, stop_at_eos=False, prefix_lm=prefix_lm)
    on = prefix_lm is None
    ids, nfe = reference_decode(lv, row, cfg, ref_forward(lv, ref_table, len(row) if on else None),
                                shift=lv.logits_shift, greedy_first=on and lv.greedy_first_token)
    out = decode(lv, [[5, 9, IMG, 33, 7]], cfg, images=[[image]])
    assert out.ids[0].tolist() == ids and out.stats[0].nfe == nfe


def test_the_dream_first_token_is_the_prompts_argmax_committed_alone():
    lv = random_llava_model(tiny_lavida_dream_config(), peak=16.0)
    prompt = [[5, 9, IMG, 33, 7]]
    image = [[picture(64, 32, seed=6)]]
    cfg = config("threshold", "none", stop_at_eos=False, trace=True, tau=1e-3)
    out = decode(lv, prompt, cfg, images=image)
    steps = out.trace.step[0].tolist()
    assert steps[0] == 1 and 1 not in steps[1:]  # alone, at the first forward
    (row,), table = lv.encode_prompts(prompt, image)
    P, pos = len(row), torch.arange(len(row) + 1)
    prefix = (pos[:, None] >= P) | (pos[None] < P)
    with torch.no_grad():  # the prompt's last hidden state, which sees the prompt alone
        last = lv(torch.tensor([row + [lv.config.mask_token_id]]), image_features=table,
                  attention_mask=prefix[None])[0, P]
    last[lv.config.mask_token_id] = -float("inf")
    assert out.ids[0, 0] == last.argmax()
    # without the prefix LM, the official generate diffuses that position like any other
    free = decode(lv, prompt, config("threshold", "none", stop_at_eos=False, trace=True,
                                     tau=1e-3, prefix_lm=False), images=image)
    assert (free.trace.step[0] == 1).sum() > 1


def test_image_and_text_rows_decode_as_they_do_alone(either):
    lv = either
    prompts = [[5, 9, IMG, 33], [7, 101, 54, 8, 12], [IMG, 40, IMG]]
    images = [[picture(64, 32, seed=3)], [], [picture(30, 30, seed=4), picture(20, 40, seed=5)]]
    cfg = config("stdec", "dual")
    together = decode(lv, prompts, cfg, images=images)
    for i, (p, im) in enumerate(zip(prompts, images, strict=True)):
        assert lv.prompt_length(p, im) == len(lv.encode_prompts([p], [im])[0][0])
        assert together.ids[i].tolist() == decode(lv, [p], cfg, images=[im]).ids[0].tolist()


# ---- checkpoints and prompts ----

def assert_loads_as_built(model):
    """The loaded model computes what the same random model built in memory does."""
    ref = random_llava_model(model.config, peak=16.0)
    rows, table = model.encode_prompts([[5, IMG, 6]], [[picture(50, 40)]])
    _, ref_table = ref.encode_prompts([[5, IMG, 6]], [[picture(50, 40)]])
    with torch.no_grad():
        x = torch.tensor(rows)
        assert torch.equal(model(x, image_features=table), ref(x, image_features=ref_table))


def test_checkpoint_in_lavida_layout_round_trips_and_is_told_from_llada_v(tmp_path):
    from safetensors import safe_open

    random_llava_checkpoint(tmp_path / "lavida", lavida="llada", peak=16.0)
    raw = json.loads((tmp_path / "lavida" / "config.json").read_text())
    assert raw["architectures"] == ["LlavaLladaForMaskedDiffusion"]
    assert raw["model_type"] == "llava_llada" and raw["mm_spatial_pool_mode"] == "bilinear"
    assert "d_model" in raw and raw["image_aspect_ratio"] == "anyres"
    with safe_open(tmp_path / "lavida" / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert {"model.transformer.wte.weight", "model.transformer.ff_out.weight",
            "model.transformer.blocks.1.q_proj.weight", "model.transformer.ln_f.weight",
            "model.mm_projector.2.weight", "model.image_newline",
            "model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc2.bias"} <= names
    model = load_model(tmp_path / "lavida", device="cpu")
    assert isinstance(model, LaViDaModel) and model.prefix_lm
    assert_loads_as_built(model)
    random_llava_checkpoint(tmp_path / "llada-v")  # same model_type, LLaDA-V's architecture
    llada_v = load_model(tmp_path / "llada-v", device="cpu")
    assert type(llada_v) is LLaDAVModel and not getattr(llada_v, "prefix_lm", False)


def test_lavida_dream_checkpoint_layout_round_trips(tmp_path):
    from safetensors import safe_open

    random_llava_checkpoint(tmp_path, lavida="dream", peak=16.0)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["architectures"] == ["LlavaDreamForMaskedDiffusion"]
    assert raw["model_type"] == "llava_dream" and "hidden_size" in raw
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert {"model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.bias", "lm_head.weight",
            "model.norm.weight", "model.mm_projector.0.weight", "model.image_newline",
            "model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc2.bias"} <= names
    model = load_model(tmp_path, device="cpu")
    assert isinstance(model, LaViDaDreamModel) and model.prefix_lm and model.logits_shift == 1
    assert_loads_as_built(model)


@pytest.mark.parametrize("change, message", [
    ({"image_aspect_ratio": "square"}, "'anyres' with 'spatial_unpad'"),
    ({"mm_spatial_pool_mode": "conv"}, "mm_spatial_pool_mode 'conv'"),
])
def test_lavida_configs_stdec_cannot_read_are_refused_by_name(tmp_path, change, message):
    random_llava_checkpoint(tmp_path, lavida="llada")
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, **change}))
    with pytest.raises(StdecError, match=message):
        load_model(tmp_path, device="cpu")


def test_prompts_carry_lavidas_system_prompt(tmp_path, monkeypatch):
    random_llava_checkpoint(tmp_path, lavida="llada")
    model, tok = stdec.load(tmp_path, device="cpu")
    assert model.system_prompt == SYSTEM_PROMPT
    (ids,) = encode(tok, ["What is it?"], chat=True, images=[[picture(32, 32)]],
                    system=model.system_prompt)
    text = tok.decode([i for i in ids if i >= 0])
    assert text.index(SYSTEM_PROMPT) < text.index("What is it?") and ids.count(IMG) == 1
    seen = {}
    real = stdec.api.encode

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(stdec.api, "encode", spy)
    stdec.generate(model, tok, ["What is it?"], images=[[picture(32, 32)]], gen_length=8,
                   block_length=8)
    assert seen["system"] == SYSTEM_PROMPT


@pytest.mark.parametrize("kind, static", [("dual", False), ("dual", True), ("prefix", False),
                                          ("dkv", False)])
@torch.no_grad()
def test_a_block_step_after_the_refresh_gives_the_full_forwards_logits(either, kind, static):
    """With nothing committed since the refresh, a cached step's logits are the full
    forward's. For LaViDa-Dream the first block's steps feed the prompt's last position (its
    hidden state predicts the first generated token): it must see the prompt only there too."""
    from stdec.decoding.engine import Engine

    with torch.inference_mode():
        engine = Engine(either, max_batch=1, max_length=128, static_step=static)
        engine.submit([5, 9, 33, 7], config("threshold", kind))  # text: static steps allowed
        engine.scheduler.admit()
        rows = [r for r in engine.slots if r is not None]
        full = engine.runner.forward("full", rows)  # refreshes the cache
        step = engine.runner.forward(kind, rows)
    torch.testing.assert_close(step, full, atol=1e-4, rtol=0)
