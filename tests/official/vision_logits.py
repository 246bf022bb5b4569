"""Generate tests/fixtures/official/vision_logits/: LLaDA-V's and LaViDa's forward logits as
their official code computes them, at tiny random weights that the official classes build.

    python tests/official/vision_logits.py [--llada-v GIT_DIR] [--lavida GIT_DIR] [--out DIR]

GIT_DIR: a bare clone (or snapshot) of github.com/ML-GSAI/LLaDA-V and of
github.com/jacklishufan/LaViDa; each given one is generated. Each one's `llava` package is
extracted to a temporary folder and imported from there; nothing of it is copied into stdec.
Needs transformers, einops. In LaViDa's copy, two training-only imports (deepspeed,
accelerate) become None, and its `llava` and `llava.model` package files (which import every
LLaVA language model) are skipped: the modules used are imported directly.

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
logits at a few positions (every stride-th and the last ones), float32. LaViDa's cases also
hold prefix_lm and the answer ids the forward saw (LaViDa-Dream's prefix-LM generate puts the
prompt's argmax first); their logits are the official forward's own, unshifted, over prompt
then answer: with the prefix LM, the prompt-only forward's rows, then the answer forward's.
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


def kept(logits: torch.Tensor, keep_last: int = KEEP_LAST, stride: int = STRIDE
         ) -> tuple[list[int], torch.Tensor]:
    n = logits.shape[0]
    pos = sorted(set(range(0, n, stride)) | set(range(max(0, n - keep_last), n)))
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


def lavida_imports(root: Path):
    """Make LaViDa's extracted llava importable here: two training-only imports become stubs,
    and the two package files that import every LLaVA language model are bypassed."""
    import types

    # LLaDA's model runs its blocks through deepspeed's activation checkpointing even in eval
    # (the whole_layer strategy); without grad that is a plain call
    no_deepspeed = ("import types; deepspeed = types.SimpleNamespace(checkpointing="
                    "types.SimpleNamespace(checkpoint=lambda fn, *args: fn(*args)))")
    for path, line, instead in [
            ("llada/modeling_llada.py", "import deepspeed", no_deepspeed),
            ("dream/modeling_dream.py", "import deepspeed", no_deepspeed),
            ("llava_llada.py", "from accelerate.utils import reduce", "reduce = None")]:
        f = root / "llava/model/language_model" / path
        text = f.read_text()
        assert f"\n{line}\n" in text, (path, line)
        f.write_text(text.replace(f"\n{line}\n", f"\n{instead}\n"))
    sys.path.insert(0, str(root))
    for name in ["llava", "llava.model"]:
        package = types.ModuleType(name)
        package.__path__ = [str(root / name.replace(".", "/"))]
        sys.modules[name] = package
    sys.modules["llava"].model = sys.modules["llava.model"]
    stub_unused()


LAVIDA_MM = dict(mm_vision_tower="siglip-tiny", mm_hidden_size=TOWER["hidden_size"],
                 mm_projector_type="mlp2x_gelu", use_mm_proj=True, image_aspect_ratio="anyres",
                 image_grid_pinpoints=[[384, 768], [768, 384], [768, 768], [1152, 384],
                                       [384, 1152]],
                 mm_patch_merge_type="spatial_unpad", mm_spatial_pool_mode="bilinear",
                 mm_newline_position="grid")
LAVIDA_KEEP_LAST, LAVIDA_STRIDE = 14, 151  # fewer rows: 28 cases in each model's file


def lavida_config(cls, text: dict, defaults: dict | None = None):
    cfg = cls(**text, **LAVIDA_MM)
    for k, v in {**(defaults or {}), **text, **LAVIDA_MM}.items():  # (transformers 5 drops
        # the keys not given, and LLaDAConfig's defaults come in as such)
        setattr(cfg, k, v)
    return cfg


def lavida_llada():
    """LaViDa-LLaDA and its two official forwards over prompt embeddings and answer ids."""
    from llava.model.language_model.llada.configuration_llada import ModelConfig
    from llava.model.language_model.llada.modeling_llada import LLaDAModelLM
    from llava.model.language_model.llava_llada import (
        LlavaLladaConfig,
        LlavaLladaForMaskedDiffusion,
    )

    text = dict(d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=64,
                mlp_ratio=2, vocab_size=VOCAB, embedding_size=VOCAB, max_sequence_length=4096,
                rope=True, rope_theta=10000.0, rms_norm_eps=1e-5, block_type="llama",
                layer_norm_type="rms", activation_type="silu", weight_tying=False,
                include_bias=False, include_qkv_bias=False, alibi=False, flash_attention=False,
                attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
                input_emb_norm=False, scale_logits=False, mask_token_id=MASK,
                eos_token_id=EOS, pad_token_id=EOS)
    # transformers 5 calls tie_weights(recompute_mapping=...); LLaDA's takes no argument (and
    # ties nothing here: weight_tying is off)
    LLaDAModelLM.tie_weights = lambda self, **kw: None
    defaults = vars(ModelConfig())
    model = LlavaLladaForMaskedDiffusion(lavida_config(LlavaLladaConfig, text, defaults)).float()
    llm = model.get_model()  # what llada/generate.py's generate runs

    def run(embeds, answer, prefix_lm):
        x = llm.transformer.wte(answer)
        if prefix_lm:  # generate.py: the prompt alone, its K/V read by the answer's forward
            first = llm(None, input_embeddings=embeds, use_cache=True)
            rest = llm(None, input_embeddings=x, past_key_values=first.attn_key_values)
            return torch.cat([first.logits, rest.logits], 1)[0]
        return llm(None, input_embeddings=torch.cat([embeds, x], 1)).logits[0]

    return model, text, run, ["LlavaLladaForMaskedDiffusion"], "llava_llada"


def lavida_dream():
    """LaViDa-Dream and its two official forwards (forward_dream, as diffusion_generate)."""
    from llava.model.language_model.dream import modeling_dream
    from llava.model.language_model.llava_dream import (
        LlavaDreamConfig,
        LlavaDreamForMaskedDiffusion,
    )

    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_theta=10000.0, rms_norm_eps=1e-6, mask_token_id=MASK, eos_token_id=EOS,
                pad_token_id=EOS, bos_token_id=None, tie_word_embeddings=False,
                hidden_act="silu", rope_scaling=None, use_sliding_window=False,
                sliding_window=None, max_window_layers=2, attention_dropout=0.0,
                initializer_range=0.02, use_cache=False)

    def default_rope(config, device=None, **kw):  # transformers 4's "default", gone in 5
        dim = config.hidden_size // config.num_attention_heads
        inv = 1.0 / config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
        return inv.to(device), 1.0

    modeling_dream.ROPE_INIT_FUNCTIONS = {**modeling_dream.ROPE_INIT_FUNCTIONS,
                                          "default": default_rope}

    def bare_cache(self):  # the official __init__ without transformers 5's Cache.__init__,
        self.past_key_values = {}  # which wants layers: this cache keeps its own dict

    modeling_dream.DreamPrefixLMCache.__init__ = bare_cache
    model = LlavaDreamForMaskedDiffusion(lavida_config(LlavaDreamConfig, text)).float()

    def run(embeds, answer, prefix_lm):
        x = model.model.embed_tokens(answer)
        if prefix_lm:  # generation_utils.py: the prefill, then the answer over its cache
            first = model.forward_dream(None, None, None, inputs_embeds=embeds, use_cache=True)
            rest = model.forward_dream(None, None, None, inputs_embeds=x,
                                       past_key_values=first.past_key_values)
            return torch.cat([first.logits, rest.logits], 1)[0]
        return model.forward_dream(None, None, None,
                                   inputs_embeds=torch.cat([embeds, x], 1)).logits[0]

    return model, text, run, ["LlavaDreamForMaskedDiffusion"], "llava_dream"


def lavida(root: Path, out: Path):
    lavida_imports(root)
    import llava.mm_utils
    import llava.model.llava_arch as arch

    arch.build_vision_tower = tiny_tower(llava)
    for folder, build, seed in [("lavida_llada", lavida_llada, 1),
                                ("lavida_dream", lavida_dream, 2)]:
        model, text, run, archs, model_type = build()
        model = randomise(model, seed)
        dream = model_type == "llava_dream"
        cases = {}
        for name, ids, images, mode in prompts():
            embeds = expand(model, llava, ids, images, mode, "anyres")
            P = embeds.shape[1]
            for prefix_lm in (True, False):
                answer = torch.full((1, GEN), MASK)
                if dream and prefix_lm:  # the official generate's first token: the
                    answer[0, 0] = run(embeds, answer, True)[P - 1].argmax()  # prompt's argmax
                logits = run(embeds, answer, prefix_lm).float()
                pos, got = kept(logits, LAVIDA_KEEP_LAST, LAVIDA_STRIDE)
                cases[f"{name}_{'prefix' if prefix_lm else 'full'}"] = dict(
                    ids=ids, sizes=[im.size for im in images], image_mode=mode, length=P,
                    prefix_lm=prefix_lm, answer=answer[0].tolist(), positions=pos, logits=got)
        save(model, {**text, **LAVIDA_MM, "architectures": archs, "model_type": model_type,
                     "mm_vision_select_layer": -2,
                     "vision_config": {**TOWER, "num_hidden_layers": 1}}, out / folder, cases)
    sys.path.remove(str(root))
    forget_llava()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llada-v")
    ap.add_argument("--lavida")
    ap.add_argument("--out", default=str(Path(__file__).parents[1] / "fixtures" / "official"
                                         / "vision_logits"))
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_grad_enabled(False)
    if not (args.llada_v or args.lavida):
        ap.error("give --llada-v, --lavida or both")
    with tempfile.TemporaryDirectory() as tmp:
        if args.llada_v:
            llada_v(extract(args.llada_v, Path(tmp) / "llada_v"), out)
        if args.lavida:
            lavida(extract(args.lavida, Path(tmp) / "lavida"), out)


if __name__ == "__main__":
    main()
