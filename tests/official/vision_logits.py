"""Generate tests/fixtures/official/vision_logits/: LLaDA-V's and LaViDa's forward logits as
their official code computes them, at tiny random weights that the official classes build.

    python tests/official/vision_logits.py --llada-v GIT_DIR --lavida GIT_DIR [--out DIR]

GIT_DIR: a bare clone (or snapshot) of github.com/ML-GSAI/LLaDA-V and of
github.com/jacklishufan/LaViDa. Each one's `llava` package is extracted to a temporary folder
and imported from there; nothing of it is copied into stdec. Needs transformers, einops.

What runs is the official code's own path from PIL images to logits: mm_utils.process_images
(anyres, or pad as lmms-eval sets it for several images), tokenizer-free prompt ids with
IMAGE_TOKEN_INDEX, LlavaMetaForCausalLM.prepare_inputs_labels_for_multimodal (its own SigLIP
tower, projector, pooling and layout), then the official language model on inputs_embeds:
LLaDA's full forward, or LaViDa's prompt-only forward whose K/V the answer's forward reads
(prefix_lm=True) or one forward over everything (prefix_lm=False). The tower keeps SigLIP's
384-pixel, 14-pixel-patch geometry (the official tower asserts 729 patches) at a tiny width.

Out: one stdec-loadable checkpoint folder per model (config.json, model.safetensors in the
official tensor names, float16 weights which the official run also used, in float32), and
cases.pt: per case the prompt ids, image sizes, image mode, the expanded length and the
logits at a few positions (every stride-th and the last ones), float32.
"""

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMG = -200
VOCAB, MASK, EOS = 64, 62, 61
TOWER = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
             image_size=384, patch_size=14, layer_norm_eps=1e-6,
             hidden_act="gelu_pytorch_tanh")
GEN = 8  # masks after each prompt
KEEP_LAST, STRIDE = 24, 97  # logits kept: the last KEEP_LAST positions and every STRIDE-th


def extract(git_dir: str, dest: Path):
    """The snapshot's llava package (LLaDA-V keeps it under train/) into dest."""
    files = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "-r", "--name-only",
                            "HEAD"], capture_output=True, text=True, check=True).stdout.split()
    root = "train/llava" if "train/llava/__init__.py" in files else "llava"
    tar = subprocess.run(["git", f"--git-dir={git_dir}", "archive", "HEAD", root],
                         capture_output=True, check=True).stdout
    tarfile.open(fileobj=BytesIO(tar)).extractall(dest, filter="data")
    return dest / Path(root).parent


def picture(w: int, h: int, seed: int) -> Image.Image:
    g = np.random.default_rng(seed)
    return Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8))


def forget_llava():
    for name in [n for n in sys.modules if n == "llava" or n.startswith("llava.")]:
        del sys.modules[name]


def stub_unused():
    """Stub what the forward does not use and transformers 5 cannot import: the resamplers
    (mm_resampler_type is unset: the official builder returns an identity)."""
    import types

    resampler = types.ModuleType("llava.model.multimodal_resampler.builder")
    resampler.build_vision_resampler = lambda config, **kw: torch.nn.Identity()
    sys.modules[resampler.__name__] = resampler


def tiny_tower(llava):
    """The official SigLIP tower class, built at tiny width without from_pretrained."""
    enc = llava.model.multimodal_encoder.siglip_encoder

    def build(config, delay_load=False, **kw):
        tower = enc.SigLipVisionTower("siglip-tiny", config, delay_load=True)
        tower.config = enc.SigLipVisionConfig(**TOWER)
        tower.vision_tower = enc.SigLipVisionModel(tower.config)
        del tower.vision_tower.vision_model.encoder.layers[-1:]  # as load_model does
        tower.vision_tower.vision_model.head = torch.nn.Identity()
        tower.is_loaded = True
        return tower

    return build


def randomise(model, seed: int):
    """Random weights, stored as float16 and run in float32 (what the fixture holds)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * min(0.5, p.shape[-1] ** -0.5))
            p.copy_(p.half().float())
    return model.eval()


def kept(logits: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    n = logits.shape[0]
    pos = sorted(set(range(0, n, STRIDE)) | set(range(max(0, n - KEEP_LAST), n)))
    return pos, logits[pos].float().clone()


def prompts():
    """(name, ids with IMG placeholders, images, image mode): the kinds the checks name."""
    a, b = picture(500, 300, 1), picture(300, 420, 2)
    return [
        ("single_wide", [3, 4, IMG, 5, 6, 7], [a], "anyres"),
        ("single_tall", [3, IMG, 8, 9], [b], "anyres"),
        ("single_square", [3, IMG, 8], [picture(384, 384, 3)], "anyres"),
        ("text", [3, 4, 5, 6, 7, 8, 9, 10], [], "anyres"),
        ("two_anyres", [3, IMG, 4, IMG, 5, 6], [a, b], "anyres"),
        ("two_pad", [3, IMG, 4, IMG, 5, 6], [a, b], "pad"),
        ("single_pad", [3, IMG, 5, 6], [b], "pad"),
    ]


def expand(model, llava, ids, images, mode, cfg_mode):
    """The official path from ids and PIL images to inputs_embeds (1, P, d)."""
    x = torch.tensor([ids])
    if not images:
        return model.get_model().embed_tokens(x) if hasattr(model.get_model(), "embed_tokens") \
            else None
    model.config.image_aspect_ratio = "pad" if mode == "pad" else cfg_mode
    proc = model.get_vision_tower().image_processor
    pixels = llava.mm_utils.process_images(images, proc, model.config)
    sizes = [im.size for im in images]
    out = model.prepare_inputs_labels_for_multimodal(x, None, None, None, None, pixels,
                                                     ["image"], image_sizes=sizes)
    model.config.image_aspect_ratio = cfg_mode
    return out[4]


def llada_v(root: Path, out: Path):
    sys.path.insert(0, str(root))
    stub_unused()
    import llava.mm_utils
    import llava.model.llava_arch as arch
    from llava.model.language_model.llava_llada import LlavaLLaDAConfig, LlavaLLaDAModelLM

    arch.build_vision_tower = tiny_tower(llava)
    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                rope_theta=10000.0, rms_norm_eps=1e-5, mask_token_id=MASK, eos_token_id=EOS,
                pad_token_id=EOS, tie_word_embeddings=False, attention_bias=False,
                # transformers 5 keeps only the keys given: every one the model reads
                hidden_act="silu", initializer_range=0.02, pretraining_tp=1, use_cache=False,
                rope_scaling=None, attention_dropout=0.0, bos_token_id=None)
    mm = dict(mm_vision_tower="siglip-tiny", mm_hidden_size=TOWER["hidden_size"],
              mm_projector_type="mlp2x_gelu", image_aspect_ratio="anyres_max_4",
              image_grid_pinpoints=[[384 * i, 384 * j] for i in range(1, 7)
                                    for j in range(1, 7)],
              mm_patch_merge_type="spatial_unpad", mm_newline_position="grid")
    cfg = LlavaLLaDAConfig(**text, **mm)
    for k, v in {**text, **mm}.items():  # (transformers 5 drops some keys, e.g. use_cache)
        setattr(cfg, k, v)
    model = randomise(LlavaLLaDAModelLM(cfg), 0)
    cases = {}
    with torch.no_grad():
        for name, ids, images, mode in prompts():
            embeds = expand(model, llava, ids, images, mode, "anyres_max_4")
            P = embeds.shape[1]
            masks = model.get_model().embed_tokens(torch.full((1, GEN), MASK))
            h = torch.cat([embeds, masks], 1)
            # as generate_with_embeds computes each step's logits
            logits = model.lm_head(model.model(inputs_embeds=h)[0]).float()[0]
            pos, got = kept(logits)
            cases[name] = dict(ids=ids, sizes=[im.size for im in images], image_mode=mode,
                               length=P, positions=pos, logits=got)
    save(model, {**text, **mm, "architectures": ["LlavaLLaDAModelLM"],
                 "model_type": "llava_llada", "mm_vision_select_layer": -2,
                 "vision_config": {**TOWER, "num_hidden_layers": 1}}, out / "llada_v", cases)
    sys.path.remove(str(root))
    forget_llava()


def save(model, config: dict, folder: Path, cases: dict):
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.half().contiguous() for k, v in model.state_dict().items()
             if "position_ids" not in k and "rotary" not in k and "inv_freq" not in k}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    torch.save(cases, folder / "cases.pt")
    print(folder, {k: (c["length"], len(c["positions"])) for k, c in cases.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llada-v", required=True)
    ap.add_argument("--lavida", required=True)
    ap.add_argument("--out", default=str(Path(__file__).parents[1] / "fixtures" / "official"
                                         / "vision_logits"))
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        llada_v(extract(args.llada_v, Path(tmp) / "llada_v"), out)


if __name__ == "__main__":
    main()
