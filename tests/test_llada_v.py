"""LLaDA-V: the official preprocessing recipe's shapes and counts, the forward against a plain
reference (transformers' SiglipVisionModel, the projector written out, LLaDA's reference
forward), caches and the decode loop with an image prefix, checkpoints, and bad images."""

import base64
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from reference import config, ref_attention, ref_rope, reference_decode
from tolerance import TINY, assert_f32_close
from transformers import SiglipVisionConfig, SiglipVisionModel

from stdec.decoding.config import CACHE_MODES
from stdec.decoding.engine import decode
from stdec.errors import StdecError
from stdec.models import LLaDAVModel, load_model
from stdec.models.images import load_image, require_vision, tokenize_with_images
from stdec.models.llada_v import (
    IMAGE_TOKEN_INDEX,
    SIGLIP_SO400M,
    LLaDAVConfig,
    image_token_count,
    preprocess_image,
)
from stdec.testing import (
    random_llava_checkpoint,
    random_llava_model,
    tiny_config,
    tiny_llava_config,
)

IMG = IMAGE_TOKEN_INDEX


@pytest.fixture(scope="module")
def vl():
    return random_llava_model(tiny_llava_config(), peak=16.0)


def picture(w: int, h: int, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g,
                                         dtype=torch.uint8).numpy())


# ---- preprocessing: counts derived by hand from mm_utils.process_anyres_image and
# llava_arch's spatial_unpad / anyres_max_4 branch. Toy tower: 32-px tiles, 4x4 vectors each;
# pinpoints (1x1)..(6x6) tiles. Tokens = 16 (base) + h * (w + 1) (the unpadded, maybe shrunk,
# map with a newline per row).
CASES = [
    # 32x32: every candidate keeps all 1024 pixels; (32, 32) wastes none -> 1x1 grid; map 4x4,
    # nothing to unpad, sqrt(16 / 64) < 1.1 -> 16 + 4 * 5
    ((32, 32), (1, 1), 36),
    # 64x32: (64, 32) keeps all, wastes none -> 2x1; map 4x8 -> 16 + 4 * 9
    ((64, 32), (2, 1), 52),
    # 100x30: keeping all 3000 pixels needs w >= 100, h >= 30; least waste (128, 32) -> 4x1;
    # map 4x16; 100/30 < 16/4 so columns are unpadded: int(100 * 4/30) = 13, pad (16-13)//2 = 1
    # -> 4x14 -> 16 + 4 * 15
    ((100, 30), (4, 1), 76),
    # 30x100: the transpose, rows unpadded -> 14x4 -> 16 + 14 * 5
    ((30, 100), (1, 4), 86),
    # 200x200: no candidate keeps all; (192, 192) keeps most -> 6x6; map 24x24,
    # sqrt(576 / 64) = 3 > 1.1 -> shrunk to 8x8 -> 16 + 8 * 9
    ((200, 200), (6, 6), 88),
    # 150x50: least waste keeping all is (160, 64) -> 5x2; map 8x20; 3 > 20/8 so rows are
    # unpadded: int(50 * 20/150) = 6, pad 1 -> 6x20; sqrt(120/64) = 1.37 -> int(6 // 1.37) = 4,
    # int(20 // 1.37) = 14 -> 16 + 4 * 15
    ((150, 50), (5, 2), 76),
]


@pytest.mark.parametrize("size,grid,tokens", CASES)
def test_preprocessing_matches_the_official_recipe(vl, size, grid, tokens):
    cfg = vl.config
    pixels, got_grid = preprocess_image(picture(*size), cfg)
    assert got_grid == grid
    assert pixels.shape == (1 + grid[0] * grid[1], 3, 32, 32)
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert image_token_count(size, cfg) == tokens
    with torch.no_grad():
        assert vl.image_features(picture(*size)).shape == (tokens, 64)


def test_tiles_are_padded_with_black_and_the_base_is_the_whole_image(vl):
    image = picture(100, 30)
    pixels, _ = preprocess_image(image, vl.config)
    # resized to 107x32 (ceil(100 * 32/30)) and pasted at x = (128 - 107) // 2 = 10
    assert torch.all(pixels[1, :, :, :10] == -1) and torch.all(pixels[4, :, :, -11:] == -1)
    base = torch.tensor(np.asarray(image.resize((32, 32))), dtype=torch.float32).view(-1, 3)
    torch.testing.assert_close(pixels[0].permute(1, 2, 0).reshape(-1, 3), base / 127.5 - 1)


def test_llada_v_sizes_of_the_real_checkpoint():
    """SigLIP so400m/14 at 384 px: 27x27 = 729 vectors a tile, grids up to 6x6 tiles."""
    cfg = LLaDAVConfig(tiny_config())
    assert cfg.side == 27 and len(cfg.image_grid_pinpoints) == 36
    assert image_token_count((384, 384), cfg) == 729 + 27 * 28
    assert image_token_count((768, 384), cfg) == 729 + 27 * 55
    # 1000x1000: (1152, 1152) -> 3x3 tiles, map 81x81, sqrt(6561 / 2916) = 1.5 -> 54x54
    assert image_token_count((1000, 1000), cfg) == 729 + 54 * 55


# ---- the forward against a plain reference ----

def ref_features(model: LLaDAVModel, image: Image.Image) -> torch.Tensor:
    """transformers' SiglipVisionModel (its second-to-last layer: LLaDA-V's tower drops the
    last), the mlp2x_gelu projector written out, the spatial_unpad layout for a grid that
    needs no unpadding."""
    cfg = model.config
    sig = SiglipVisionModel(SiglipVisionConfig(**{**cfg.vision, "num_hidden_layers": 3},
                                               vision_use_head=False)).eval()
    prefix = "vision_model." if hasattr(sig, "vision_model") else ""
    state = {prefix + k: v for k, v in model.vision_tower.state_dict().items()}
    sig.load_state_dict(state, strict=False)  # layer 2 stays random: it must not matter
    pixels, (cols, rows) = preprocess_image(image, cfg)
    hidden = sig(pixels, output_hidden_states=True).hidden_states[-2]  # (n, 16, 32)
    p = model.mm_projector
    x = F.linear(F.gelu(F.linear(hidden, p[0].weight, p[0].bias)), p[2].weight, p[2].bias)
    base, tiles = x[0], x[1:].view(rows, cols, 4, 4, -1)
    lines = []
    for r in range(rows):
        for y in range(4):
            lines += [tiles[r, c, y] for c in range(cols)] + [model.image_newline[None]]
    return torch.cat([base, *lines])


def ref_forward(model: LLaDAVModel, table: torch.Tensor):
    lm = model.language_model

    def forward(_, ids: list[int], a: int, b: int, frozen):
        t, c = lm.model.transformer, lm.config
        hd = c.head_dim
        rope = ref_rope(hd, c.rope_theta, a, b)
        h = torch.stack([table[-1 - i] if i < 0 else t.wte.weight[i] for i in ids[a:b]])[None]
        kv = []
        for i, blk in enumerate(t.blocks):
            x = blk.attn_norm(h)
            q, k, v = (p(x).view(1, b - a, -1, hd).transpose(1, 2) for p in
                       (blk.q_proj, blk.k_proj, blk.v_proj))
            att = ref_attention(rope(q), rope(k), v, frozen and frozen[i], a, b, kv)
            h = h + blk.attn_out(att)
            x = blk.ff_norm(h)
            h = h + blk.ff_out(F.silu(blk.ff_proj(x)) * blk.up_proj(x))
        return t.ff_out(t.ln_f(h))[0], kv

    return forward


def image_prompt(vl, images=None):
    images = images or [picture(64, 32, seed=1), picture(32, 64, seed=2)]  # 2x1 and 1x2 grids
    ids = [5, 9, IMG, 33, 7, IMG, 101, 54][: 5 + 3 * (len(images) - 1)]
    (row,), table = vl.encode_prompts([ids], [images])
    with torch.no_grad():
        ref_table = torch.cat([ref_features(vl, im) for im in images])
    return row, table, ref_table


@torch.no_grad()
def test_vl_forward_equals_the_reference_forward(vl):
    row, table, ref_table = image_prompt(vl)
    assert len(row) == 6 + 52 + 56 and sum(i < 0 for i in row) == 108  # 1x2: 16 + 8 * 5
    torch.testing.assert_close(table, ref_table, atol=1e-5, rtol=0)
    x = row + [2] * 8
    ours = vl(torch.tensor([x]), image_features=table)[0]
    theirs, _ = ref_forward(vl, ref_table)(None, x, 0, len(x), None)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    embeds, ids = vl.embed_prompt([5, 9, IMG, 33], [picture(64, 32, seed=1)])
    assert embeds.shape == (1, 4 - 1 + 52, 64) and ids.shape == (1, 55)
    torch.testing.assert_close(vl(ids, inputs_embeds=embeds), vl(ids, image_features=table),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@torch.no_grad()
def test_cached_logits_equal_uncached_with_an_image_prefix(vl, mode):
    row, table, _ = image_prompt(vl)

    def model(ids, **kw):
        return vl(ids, image_features=table, **kw)

    ids = torch.tensor([row + [2] * 16])
    s, e = len(row), len(row) + 8
    full = model(ids)
    cache = vl.new_cache(1, ids.shape[1])
    assert_f32_close(model(ids, cache=cache), full, **TINY)
    if mode == "prefix":
        step = model(ids[:, s:], cache=cache, cache_start=s, logits_slice=slice(0, e - s))
    else:
        step = model(ids[:, s:e], cache=cache, cache_start=s)
    assert_f32_close(step, full[:, s:e], **TINY)


@pytest.mark.parametrize("cache", CACHE_MODES)
def test_decode_loop_runs_unchanged_with_an_image_prefix(vl, cache):
    image = picture(32, 32, seed=6)
    row, table, ref_table = image_prompt(vl, [image])
    cfg = config("threshold", cache, stop_at_eos=False)
    ids, nfe = reference_decode(vl, row, cfg, ref_forward(vl, ref_table))
    out = decode(vl, [[5, 9, IMG, 33, 7]], cfg, images=[[image]])  # expanded by the engine
    assert out.ids[0].tolist() == ids and out.stats[0].nfe == nfe


@pytest.mark.parametrize("cache", ["dual"])
def test_image_and_text_rows_decode_as_they_do_alone(vl, cache):
    prompts = [[5, 9, IMG, 33], [7, 101, 54, 8, 12], [IMG, 40, IMG]]
    images = [[picture(64, 32, seed=3)], [], [picture(30, 30, seed=4), picture(20, 40, seed=5)]]
    cfg = config("stdec", cache)
    together = decode(vl, prompts, cfg, images=images)
    for i, (p, im) in enumerate(zip(prompts, images, strict=True)):
        alone = decode(vl, [p], cfg, images=[im])
        assert vl.prompt_length(p, im) == len(vl.encode_prompts([p], [im])[0][0])
        assert together.ids[i].tolist() == alone.ids[0].tolist()
    swapped = decode(vl, prompts[::-1], cfg, images=images[::-1])  # other slots, other offsets
    assert swapped.ids.tolist() == together.ids.tolist()[::-1]


def test_a_request_whose_images_cannot_be_encoded_fails_alone(vl):
    from stdec.decoding.engine import Engine

    engine = Engine(vl, max_batch=2, max_length=256)
    bad = engine.submit([5, IMG, 6, IMG], config("threshold"), images=[picture(32, 32)])
    good = engine.submit([5, IMG, 6], config("threshold"), images=[picture(32, 32)])
    engine.run()
    assert bad.state == "failed" and "2 <image> placeholders but 1 images" in bad.error
    assert good.state == "done"
    alone = decode(vl, [[5, IMG, 6]], config("threshold"), images=[[picture(32, 32)]])
    assert good.ids == alone.ids[0].tolist()


# ---- checkpoints ----

@pytest.mark.parametrize("shard", [None, 20_000])
def test_checkpoint_round_trip_in_llada_v_layout(tmp_path, shard):
    random_llava_checkpoint(tmp_path, max_shard_bytes=shard)
    assert (tmp_path / "model.safetensors.index.json").exists() == bool(shard)
    model = load_model(tmp_path, device="cpu")
    assert isinstance(model, LLaDAVModel)
    ref = random_llava_model(model.config)
    rows, table = model.encode_prompts([[5, IMG, 6]], [[picture(50, 40)]])
    ref_rows, ref_table = ref.encode_prompts([[5, IMG, 6]], [[picture(50, 40)]])
    x = torch.tensor(rows)
    with torch.no_grad():
        assert torch.equal(model(x, image_features=table), ref(x, image_features=ref_table))


def test_official_names_and_config_are_read(tmp_path):
    import json

    from safetensors import safe_open

    random_llava_checkpoint(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "llava_llada" and raw["mm_projector_type"] == "mlp2x_gelu"
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.image_newline",
            "model.layers.1.self_attn.o_proj.weight", "model.mm_projector.2.weight",
            "model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc2.bias"} <= names
    # the official grid string is read as LLaDA-V's training script writes it
    raw["image_grid_pinpoints"] = "(1x1),...,(2x3)"
    cfg = LLaDAVConfig.from_dict(raw)
    assert cfg.image_grid_pinpoints == [(32, 32), (32, 64), (32, 96), (64, 32), (64, 64),
                                        (64, 96)]
    assert cfg.mask_token_id == raw["mask_token_id"]
    raw["mm_hidden_size"] = 7
    with pytest.raises(StdecError, match="mm_hidden_size 7"):
        LLaDAVConfig.from_dict(raw)
    # LaViDa shares model_type llava_llada but not the layout: refused by name
    raw["architectures"] = ["LlavaLladaForMaskedDiffusion"]
    with pytest.raises(StdecError, match="LaViDa checkpoint"):
        LLaDAVConfig.from_dict(raw)


def test_placeholders_must_match_images(vl):
    with pytest.raises(StdecError, match="2 <image> placeholders but 1 images"):
        vl.encode_prompts([[IMG, 5, IMG]], [[picture(32, 32)]])


# ---- bad images: one sentence each, before any model work ----

def png_bytes(w: int = 20, h: int = 20) -> bytes:
    buf = io.BytesIO()
    picture(w, h).save(buf, format="PNG")
    return buf.getvalue()


def test_good_images_load_from_every_source(tmp_path):
    data = png_bytes()
    (tmp_path / "a.png").write_bytes(data)
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    for source in (tmp_path / "a.png", str(tmp_path / "a.png"), url, picture(20, 20)):
        image = load_image(source)
        assert image.size == (20, 20) and image.mode == "RGB"


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_text("hello, not a picture"), "is not an image"),
    (lambda p: p.write_bytes(png_bytes(64, 64)[:300]), "is truncated"),
    (lambda p: p.write_bytes(png_bytes(30, 30)), "is too large: 30x30 is over 100 pixels"),
])
def test_bad_image_files(tmp_path, make, message):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(StdecError, match=message):
        load_image(path, max_pixels=100 if "large" in message else 10**6)


@pytest.mark.parametrize("source,message", [
    ("https://example.com/cat.png", "never fetches images"),
    ("data:image/png;base64,@@@not base64@@@", "not valid base64"),
    ("data:text/plain;base64,aGVsbG8=", "not data:image"),
    ("data:image/png;base64," + base64.b64encode(b"GIF89a junk").decode(), "is not an image"),
    ("/no/such/image.png", "is not a file"),
    (42, "is a int"),
])
def test_bad_image_sources(source, message):
    with pytest.raises(StdecError, match=message):
        load_image(source)


def test_too_many_bytes_and_too_many_pixels_in_memory():
    url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    with pytest.raises(StdecError, match="too large: over 100 bytes"):
        load_image(url, max_bytes=100)
    with pytest.raises(StdecError, match="too large"):
        load_image(picture(20, 20), max_pixels=399)


def test_images_for_a_text_only_model_are_refused(tiny_model, vl):
    with pytest.raises(StdecError, match="LLaDAModelLM is a text-only model"):
        require_vision(tiny_model, 1)
    require_vision(tiny_model, 0)
    require_vision(vl, 2)


def test_prompt_text_with_placeholders_tokenizes_as_llava_does(checkpoint):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    ids = tokenize_with_images("look <image> and <image>!", tok, 2, IMG)
    assert ids.count(IMG) == 2
    parts = [tok(p).input_ids for p in ("look ", " and ", "!")]
    assert ids == parts[0] + [IMG] + parts[1] + [IMG] + parts[2]
    with pytest.raises(StdecError, match="1 <image> placeholders but 2 images"):
        tokenize_with_images("one <image>", tok, 2, IMG)


def test_default_tower_is_llada_v_siglip():
    assert SIGLIP_SO400M["num_hidden_layers"] == 26 and SIGLIP_SO400M["patch_size"] == 14


# ---- pad mode (lmms-eval's for several images) and the per-request options ----

def test_pad_mode_is_one_grey_square_crop_without_a_newline(vl):
    from stdec.decoding.config import DecodeConfig, check_for_model
    from stdec.models.llada_v import pad_to_square

    wide, tall = picture(64, 32, seed=1), picture(20, 40, seed=2)
    pixels = pad_to_square(wide, 32)  # 64x64 canvas, the image at y 16..48, then halved
    grey = 127 / 127.5 - 1
    assert pixels.shape == (1, 3, 32, 32)
    assert torch.allclose(pixels[0, :, :6], torch.full((3, 6, 32), grey))
    assert image_token_count((64, 32), vl.config, "pad") == 16  # side**2, no newline
    (row,), table = vl.encode_prompts([[5, IMG, 6, IMG]], [[wide, tall]], "pad")
    assert len(row) == 2 + 16 + 16 and table.shape == (32, 64)
    assert vl.prompt_length([5, IMG, 6, IMG], [wide, tall], "pad") == len(row)
    with torch.no_grad():
        torch.testing.assert_close(table[:16], vl.encode_images(pixels)[0])
    with pytest.raises(StdecError, match="prefix_lm=false.*LaViDa.*leave prefix_lm unset"):
        check_for_model(DecodeConfig(prefix_lm=False), vl)
