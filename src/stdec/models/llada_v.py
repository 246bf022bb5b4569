"""Native LLaDA-V: a SigLIP vision tower, an MLP projector and stdec's LLaDA, in the layout of
the GSAI-ML/LLaDA-V checkpoint.

What the official code (github.com/ML-GSAI/LLaDA-V, train/llava/) fixes, and this file follows:
- config.json: model_type "llava_llada" (LlavaLLaDAModelLM), the language model's keys in Llama
  style (hidden_size, num_hidden_layers, ...), mm_projector_type "mlp2x_gelu", mm_hidden_size,
  image_aspect_ratio "anyres_max_4", image_grid_pinpoints (the (1x1)..(6x6) grid of 384-pixel
  tiles, in pixels), mm_patch_merge_type "spatial_unpad" (scripts/train_llada_v/*.sh,
  train/train.py). The vision tower has no config of its own there: it is SigLIP so400m
  patch14-384 with its last layer deleted (multimodal_encoder/siglip_encoder.py); a
  "vision_config" entry, which stdec writes for its own checkpoints, overrides that.
- tensors: model.embed_tokens, model.layers.{i}.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj,
  input_layernorm, post_attention_layernorm}, model.norm, lm_head (llada_v_prepare/
  rename_checkpoint.py); model.vision_tower.vision_tower.vision_model.*, model.mm_projector.{0,2},
  model.image_newline (model/llava_arch.py, multimodal_projector/builder.py).
- image features: the last remaining SigLIP layer's output, before post_layernorm, projected;
  one base image (the whole image resized to a tile) then the tiles of the best grid, the tile
  features unpadded, shrunk bilinearly when past max_tiles tiles' worth, a newline vector ending
  every row (llava_arch.py prepare_inputs_labels_for_multimodal, mm_utils.process_anyres_image).
- pad mode (lmms-eval's for prompts with several images, llava_onevision_llada.py): the image
  padded to a square on grey (127, 127, 127, mm_utils.expand2square with the processor's mean),
  resized to one tile: side**2 vectors and no newline, as the official code lays out a stacked
  (N, 3, S, S) batch of crops (llava_arch.py, the path for 4-D images).
- a prompt's "<image>" becomes one placeholder id -200 (constants.IMAGE_TOKEN_INDEX,
  mm_utils.tokenizer_image_token), replaced by that image's feature vectors.

Here the expanded prompt keeps one id per image vector: -1 - j for row j of a feature table
(negative, so never a real token), and the forward takes the table beside the ids. The engine
expands a request's prompt when it admits it and keeps each slot's table, so the decode loop
feeds ids as for text and every rule and cache mode works unchanged.
"""

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from stdec.errors import StdecError
from stdec.models.cache import KVCache
from stdec.models.interface import NO_DEFAULTS, Configurable
from stdec.models.llada import LLaDAConfig, LLaDAModelLM
from stdec.models.quant import quiet_imports

__all__ = ["IMAGE_TOKEN_INDEX", "PAD_GREY", "LLaDAVConfig", "LLaDAVModel", "best_resolution",
           "image_token_count", "pad_to_square", "padded", "preprocess_image"]

IMAGE_TOKEN_INDEX = -200  # the placeholder one "<image>" becomes in the prompt ids
PAD_GREY = (127, 127, 127)  # pad mode's background: int(255 * SigLIP's mean 0.5)
# SigLIP so400m-patch14-384 as LLaDA-V runs it: 27 layers, the last one deleted
SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                     num_attention_heads=16, image_size=384, patch_size=14,
                     hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, num_channels=3)
# config.json (Llama-style keys) -> LLaDAConfig field
TEXT_KEYS = {"hidden_size": "d_model", "num_hidden_layers": "n_layers",
             "num_attention_heads": "n_heads", "num_key_value_heads": "n_kv_heads",
             "intermediate_size": "mlp_hidden_size", "vocab_size": "vocab_size",
             "max_position_embeddings": "max_sequence_length", "rope_theta": "rope_theta",
             "rms_norm_eps": "rms_norm_eps", "tie_word_embeddings": "weight_tying",
             "attention_bias": "include_qkv_bias", "mask_token_id": "mask_token_id",
             "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id"}
# LLaDA-V's per-layer names -> stdec LLaDA's
BLOCK_NAMES = {"self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj",
               "self_attn.v_proj": "v_proj", "self_attn.o_proj": "attn_out",
               "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj", "mlp.down_proj": "ff_out",
               "input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm"}
TOP_NAMES = {"model.embed_tokens.weight": "wte.weight", "model.norm.weight": "ln_f.weight",
             "lm_head.weight": "ff_out.weight"}
LM = "language_model.model.transformer."
TOWER = "model.vision_tower.vision_tower.vision_model."
# the vision parts' names, the same in LLaDA-V and LaViDa checkpoints -> this module's
MM_NAMES = ((TOWER, "vision_tower."), ("model.mm_projector.", "mm_projector."),
            ("model.image_newline", "image_newline"))


def rename_prefix(name: str, pairs, reverse: bool = False) -> str | None:
    """`name` with the first of `pairs` (checkpoint prefix, module prefix) that it starts with
    swapped, from the checkpoint's to the module's or with `reverse` back; None if none."""
    for theirs, ours in pairs:
        a, b = (ours, theirs) if reverse else (theirs, ours)
        if name.startswith(a):
            return b + name[len(a):]
    return None


def parse_pinpoints(spec: Any, tile: int) -> list[tuple[int, int]]:
    """image_grid_pinpoints as (width, height) pixels: a list, or "(1x1),...,(6x6)" in tiles."""
    if isinstance(spec, str) and "x" in spec:
        ranges = re.findall(r"\((\d+)x(\d+)\)", spec)
        (a, b), (c, d) = map(int, ranges[0]), map(int, ranges[-1])
        return [(i * tile, j * tile) for i in range(a, c + 1) for j in range(b, d + 1)]
    if isinstance(spec, list) and spec and all(len(p) == 2 for p in spec):
        return [(int(w), int(h)) for w, h in spec]
    raise StdecError(f"image_grid_pinpoints {spec!r} is neither a list of [width, height] nor "
                     "a '(1x1),...,(NxM)' range.")


@dataclass
class LLaDAVConfig:
    text: LLaDAConfig
    vision: dict = field(default_factory=lambda: dict(SIGLIP_SO400M))  # SiglipVisionConfig kwargs
    projector_type: str = "mlp2x_gelu"
    image_aspect_ratio: str = "anyres_max_4"
    image_grid_pinpoints: list | str = field(default_factory=lambda: "(1x1),...,(6x6)")
    mm_patch_merge_type: str = "spatial_unpad"
    tokenizer_model_max_length: int | None = None  # the longest prompt with its images

    def __post_init__(self):
        self.vision = {**SIGLIP_SO400M, **self.vision}
        if not re.fullmatch(r"linear|mlp\d+x_gelu", self.projector_type):
            raise StdecError(f"mm_projector_type {self.projector_type!r} is not supported; stdec "
                             "knows 'linear' and 'mlpNx_gelu' (LLaDA-V uses mlp2x_gelu).")
        if self.mm_patch_merge_type not in ("flat", "spatial_unpad"):
            raise StdecError(f"mm_patch_merge_type {self.mm_patch_merge_type!r} is not supported; "
                             "stdec knows 'flat' and 'spatial_unpad' (LLaDA-V's).")
        self.image_grid_pinpoints = parse_pinpoints(self.image_grid_pinpoints, self.tile)

    def __getattr__(self, name: str):  # the text model's fields read through (mask id, ...)
        if name == "text":
            raise AttributeError(name)
        return getattr(self.text, name)

    @property
    def tile(self) -> int:
        return self.vision["image_size"]

    @property
    def side(self) -> int:  # vision tokens per tile side
        return self.vision["image_size"] // self.vision["patch_size"]

    @property
    def anyres(self) -> bool:
        return self.image_aspect_ratio == "anyres" or "anyres_max" in self.image_aspect_ratio

    @property
    def max_tiles(self) -> int | None:
        m = re.match(r"anyres_max_(\d+)", self.image_aspect_ratio)
        return int(m.group(1)) if m else None

    @classmethod
    def from_dict(cls, raw: dict) -> "LLaDAVConfig":
        if "LlavaLladaForMaskedDiffusion" in (raw.get("architectures") or []):
            raise StdecError("this is a LaViDa checkpoint (LlavaLladaForMaskedDiffusion, "
                             "model_type llava_llada too); read it with LaViDaConfig.")
        kw = {TEXT_KEYS[k]: v for k, v in raw.items() if k in TEXT_KEYS and v is not None}
        if isinstance(kw.get("eos_token_id"), list):
            kw["eos_token_id"] = kw["eos_token_id"][0]
        kw.setdefault("pad_token_id", kw.get("eos_token_id", 126081))
        return cls.around(LLaDAConfig(**kw), raw)

    # config.json's keys for the parts around the language model -> this class's fields
    mm_keys = {"mm_projector_type": "projector_type", "image_aspect_ratio": "image_aspect_ratio",
               "image_grid_pinpoints": "image_grid_pinpoints",
               "mm_patch_merge_type": "mm_patch_merge_type",
               "tokenizer_model_max_length": "tokenizer_model_max_length"}

    @classmethod
    def around(cls, text, raw: dict) -> "LLaDAVConfig":
        """This config around `text` (the language model's) from config.json's other keys; a
        key it lacks keeps this class's default."""
        vision = {k: v for k, v in raw.get("vision_config", {}).items() if k in SIGLIP_SO400M}
        cfg = cls(text, vision, **{ours: raw[theirs] for theirs, ours in cls.mm_keys.items()
                                   if raw.get(theirs)})
        mm = raw.get("mm_hidden_size", cfg.vision["hidden_size"])
        if mm != cfg.vision["hidden_size"]:
            raise StdecError(f"config.json has mm_hidden_size {mm}, but the vision tower's hidden "
                             f"size is {cfg.vision['hidden_size']}.")
        return cfg

    def to_dict(self) -> dict:
        t = asdict(self.text)
        text = {k: t[v] for k, v in TEXT_KEYS.items()}
        return {"architectures": ["LlavaLLaDAModelLM"], "model_type": "llava_llada", **text,
                "hidden_act": "silu", "mm_vision_tower": "google/siglip2-so400m-patch14-384",
                "mm_hidden_size": self.vision["hidden_size"], "mm_vision_select_layer": -2,
                "mm_projector_type": self.projector_type, "use_mm_proj": True,
                "image_aspect_ratio": self.image_aspect_ratio,
                "image_grid_pinpoints": [list(p) for p in self.image_grid_pinpoints],
                "mm_patch_merge_type": self.mm_patch_merge_type, "vision_config": self.vision,
                **({"tokenizer_model_max_length": self.tokenizer_model_max_length}
                   if self.tokenizer_model_max_length else {})}


# ---- preprocessing (mm_utils.process_anyres_image with the SigLIP processor) ----

def best_resolution(size: tuple[int, int], candidates: list[tuple[int, int]]) -> tuple[int, int]:
    """The candidate (w, h) keeping the most of the image's pixels, then wasting the fewest."""
    W, H = size
    best, most, waste = candidates[0], -1, math.inf
    for w, h in candidates:
        s = min(w / W, h / H)
        kept = min(int(W * s) * int(H * s), W * H)
        if kept > most or (kept == most and w * h - kept < waste):
            best, most, waste = (w, h), kept, w * h - kept
    return best


def resize_and_pad(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Fit the image inside `target` keeping its aspect ratio, centred on black."""
    (W, H), (w, h) = image.size, target
    if w / W < h / H:
        nw, nh = w, min(math.ceil(H * w / W), h)
    else:
        nw, nh = min(math.ceil(W * h / H), w), h
    canvas = Image.new("RGB", (w, h), (0, 0, 0))
    canvas.paste(image.resize((nw, nh)), ((w - nw) // 2, (h - nh) // 2))
    return canvas


def to_pixels(image: Image.Image) -> Tensor:
    """SigLIP's normalisation: [0, 255] -> [-1, 1], (3, H, W) float32."""
    x = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy((x - 0.5) / 0.5).permute(2, 0, 1).contiguous()


def preprocess_image(image: Image.Image, cfg: LLaDAVConfig) -> tuple[Tensor, tuple[int, int]]:
    """Pixels (1 + tiles, 3, S, S) and the tile grid (columns, rows): the whole image resized to
    one tile, then the tiles of the best grid, row by row."""
    image, S = image.convert("RGB"), cfg.tile
    base = image.resize((S, S))  # PIL's bicubic, as the official code resizes
    if not cfg.anyres:
        return to_pixels(base)[None], (0, 0)
    w, h = best_resolution(image.size, cfg.image_grid_pinpoints)
    padded = resize_and_pad(image, (w, h))
    tiles = [padded.crop((x, y, x + S, y + S)) for y in range(0, h, S) for x in range(0, w, S)]
    return torch.stack([to_pixels(t) for t in [base, *tiles]]), (w // S, h // S)


def pad_to_square(image: Image.Image, tile: int) -> Tensor:
    """Pad mode's one crop (1, 3, S, S): the image centred on a grey square, resized to a tile."""
    image = image.convert("RGB")
    W, H = image.size
    if W != H:
        canvas = Image.new("RGB", (max(W, H),) * 2, PAD_GREY)
        canvas.paste(image, ((max(W, H) - W) // 2, (max(W, H) - H) // 2))
        image = canvas
    return to_pixels(image.resize((tile, tile)))[None]


def padded(cfg: LLaDAVConfig, image_mode: str) -> bool:
    """Whether images go in pad mode: asked for, or the checkpoint's own setting."""
    return image_mode == "pad" or cfg.image_aspect_ratio == "pad"


def unpad_box(h: int, w: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the image inside an (h, w) feature map of its padded grid."""
    W, H = size
    if W / H > w / h:  # padding was added above and below
        pad = (h - int(H * (w / W))) // 2
        return pad, h - pad, 0, w
    pad = (w - int(W * (h / H))) // 2
    return 0, h, pad, w - pad


def shrink_to(h: int, w: int, cfg: LLaDAVConfig) -> tuple[int, int]:
    """anyres_max_N: past N tiles' worth of tokens (by more than 10%), scale the map down."""
    if cfg.max_tiles is None:
        return h, w
    times = math.sqrt(h * w / (cfg.max_tiles * cfg.side ** 2))
    return (int(h // times), int(w // times)) if times > 1.1 else (h, w)


def image_token_count(size: tuple[int, int], cfg: LLaDAVConfig, image_mode: str = "anyres"
                      ) -> int:
    """How many prompt positions one image of `size` (w, h) takes."""
    n = cfg.side ** 2
    if padded(cfg, image_mode):
        return n
    if not cfg.anyres:  # one crop, then a newline (the official model's list-of-crops path)
        return n + (cfg.mm_patch_merge_type == "spatial_unpad")
    if cfg.mm_patch_merge_type == "flat":
        return n * (1 + math.prod(d // cfg.tile for d in
                                  best_resolution(size, cfg.image_grid_pinpoints)))
    cols, rows = (d // cfg.tile for d in best_resolution(size, cfg.image_grid_pinpoints))
    top, bottom, left, right = unpad_box(rows * cfg.side, cols * cfg.side, size)
    h, w = shrink_to(bottom - top, right - left, cfg)
    return n + h * (w + 1)


# ---- the model ----

class LLaDAVModel(nn.Module, Configurable):
    """LLaDA-V: vision_tower (transformers' SiglipVisionModel), mm_projector, image_newline and
    language_model (stdec's LLaDAModelLM)."""

    language_model_class: type[nn.Module] = LLaDAModelLM  # LaViDa-Dream: DreamModel
    # the model interface's traits (models/interface.py); logits_shift is the language model's
    prefix_lm = False
    greedy_first_token = False
    system_prompt: str | None = None
    cuda_graphs = True
    decoding_defaults = NO_DEFAULTS

    def __init__(self, cfg: LLaDAVConfig):
        super().__init__()
        self.config = cfg
        self.language_model = self.language_model_class(cfg.text)
        d = self.language_model.get_input_embeddings().embedding_dim
        mm = cfg.vision["hidden_size"]
        # imported here: transformers' SigLIP takes seconds to import, which a text-only
        # decode should not pay; quietly, as it imports torchao when that is installed
        with quiet_imports():
            from transformers import SiglipVisionConfig, SiglipVisionModel

        tower = SiglipVisionModel(SiglipVisionConfig(**cfg.vision, vision_use_head=False))
        # transformers 4 wraps the SigLIP transformer in .vision_model, 5 does not
        self.vision_tower = getattr(tower, "vision_model", tower)
        depth = 1 if cfg.projector_type == "linear" else int(re.sub(r"\D", "", cfg.projector_type))
        layers: list[nn.Module] = [nn.Linear(mm, d)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(d, d)]
        self.mm_projector = nn.Sequential(*layers)
        if "unpad" in cfg.mm_patch_merge_type:
            self.image_newline = nn.Parameter(torch.zeros(d))

    @staticmethod
    def from_checkpoint_name(name: str) -> str:
        """A LLaDA-V tensor name -> this module's (unknown names pass through unchanged)."""
        if name in TOP_NAMES:
            return LM + TOP_NAMES[name]
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", name)
        if m and m.group(2) in BLOCK_NAMES:
            return f"{LM}blocks.{m.group(1)}.{BLOCK_NAMES[m.group(2)]}.{m.group(3)}"
        return rename_prefix(name, MM_NAMES) or name

    @staticmethod
    def to_checkpoint_name(name: str) -> str:
        if name.startswith(LM):
            rest = name[len(LM):]
            top = {v: k for k, v in TOP_NAMES.items()}
            if rest in top:
                return top[rest]
            _, i, ours, kind = rest.split(".")
            theirs = {v: k for k, v in BLOCK_NAMES.items()}[ours]
            return f"model.layers.{i}.{theirs}.{kind}"
        return rename_prefix(name, MM_NAMES, reverse=True) or name

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state, strict=strict, assign=assign)
        emb = self.vision_tower.embeddings  # its position_ids buffer is not in checkpoints:
        if emb.position_ids.is_meta:  # built on the meta device by load_model, rebuild it
            emb.position_ids = torch.arange(emb.num_positions, device=self.device)[None]
        return out

    @property
    def logits_shift(self) -> int:  # the language model's (Dream's predict from i - 1)
        return self.language_model.logits_shift

    @property
    def device(self) -> torch.device:
        return self.language_model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.dtype

    def fuse(self) -> "LLaDAVModel":
        self.language_model.fuse()
        return self

    def new_cache(self, batch: int, length: int) -> KVCache:
        return self.language_model.new_cache(batch, length)

    def blocks(self) -> nn.ModuleList:  # the language model's: the vision tower is not quantized
        return self.language_model.blocks()

    def output_head(self) -> nn.Linear | None:
        return self.language_model.output_head()

    def get_input_embeddings(self) -> nn.Module:  # the language model's token embedding
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, table: nn.Module):
        self.language_model.set_input_embeddings(table)

    def encode_images(self, pixels: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, side**2, d): the tower's last layer (no post-norm), projected."""
        out = self.vision_tower(pixels.to(self.dtype), output_hidden_states=True)
        return self.mm_projector(out.hidden_states[-1])

    def image_features(self, image: Image.Image, image_mode: str = "anyres") -> Tensor:
        """(image_token_count, d): one image's vectors in prompt order."""
        cfg = self.config
        if padded(cfg, image_mode):
            return self.encode_images(pad_to_square(image, cfg.tile).to(self.device))[0]
        pixels, (cols, rows) = preprocess_image(image, cfg)
        feats = self.encode_images(pixels.to(self.device))
        if cfg.mm_patch_merge_type == "flat":
            return feats.flatten(0, 1)
        if len(feats) == 1:
            return torch.cat([feats[0], self.image_newline[None]])
        s, d = cfg.side, feats.shape[-1]
        x = feats[1:].view(rows, cols, s, s, d).permute(4, 0, 2, 1, 3)
        x = x.reshape(d, rows * s, cols * s)  # (d, H, W): the tiles' grid as one map
        top, bottom, left, right = unpad_box(rows * s, cols * s, image.size)
        x = x[:, top:bottom, left:right]
        h, w = shrink_to(*x.shape[1:], cfg)
        if (h, w) != tuple(x.shape[1:]):
            x = F.interpolate(x[None], [h, w], mode="bilinear")[0]
        x = torch.cat([x, self.image_newline[:, None, None].expand(d, h, 1)], dim=2)
        return torch.cat([feats[0], x.flatten(1).T])  # (side**2 + h * (w + 1), d)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[list[int]], images: list[list[Image.Image]],
                       image_mode: str = "anyres") -> tuple[list[list[int]], Tensor | None]:
        """Expand each prompt's IMAGE_TOKEN_INDEX placeholders (one per image, in order) into
        one id per image vector, -1 - j for row j of the returned feature table.
        `image_mode`: "anyres" (the checkpoint's own layout) or "pad" (one grey-padded crop)."""
        out, table, n = [], [], 0
        for ids, imgs in zip(prompts, images, strict=True):
            if sum(i == IMAGE_TOKEN_INDEX for i in ids) != len(imgs):
                raise StdecError(f"a prompt has {sum(i == IMAGE_TOKEN_INDEX for i in ids)} "
                                 f"<image> placeholders but {len(imgs)} images; give one each.")
            row, it = [], iter(imgs)
            for i in ids:
                if i != IMAGE_TOKEN_INDEX:
                    row.append(i)
                    continue
                f = self.image_features(next(it), image_mode)
                row += range(-1 - n, -1 - n - len(f), -1)
                table.append(f)
                n += len(f)
            out.append(row)
        return out, (torch.cat(table) if table else None)

    def prompt_length(self, ids: list[int], images: list[Image.Image],
                      image_mode: str = "anyres") -> int:
        """Positions a prompt with placeholders takes once its images are expanded (the vision
        tower does not run); one with images past the checkpoint's tokenizer_model_max_length
        is refused.

        The official code cuts such a prompt at that length (llava_arch.py,
        prepare_inputs_labels_for_multimodal): it loses its end, the question and the
        assistant's header, and the model answers a prompt nobody wrote. A refusal that says
        by how much it is too long serves a user better than that answer."""
        sizes = iter(image.size for image in images)
        n = sum(self.image_token_count(next(sizes), image_mode) if i == IMAGE_TOKEN_INDEX else 1
                for i in ids)
        limit = self.config.tokenizer_model_max_length
        if limit and n > limit and images:  # the official code leaves text alone uncut
            raise StdecError(f"the prompt takes {n} positions with its images, more than this "
                             f"checkpoint's tokenizer_model_max_length ({limit}), past which its "
                             "official code cuts the prompt's end off; shorten the text or give "
                             "fewer or smaller images.")
        return n

    def image_token_count(self, size: tuple[int, int], image_mode: str = "anyres") -> int:
        return image_token_count(size, self.config, image_mode)

    def embed(self, ids: Tensor, features: Tensor | None) -> Tensor:
        """(B, L) ids -> (B, L, d): token embeddings, features[-1 - id] where id < 0."""
        wte = self.language_model.get_input_embeddings()
        if features is None:
            return wte(ids)  # a negative id without features fails here, loudly
        rows = (-1 - ids).clamp(0, len(features) - 1)
        return torch.where((ids < 0)[..., None], features[rows].to(self.dtype),
                           wte(ids.clamp(min=0)))

    def embed_prompt(self, ids: list[int], images: list[Image.Image],
                     image_mode: str = "anyres") -> tuple[Tensor, Tensor]:
        """One prompt with placeholders -> (inputs_embeds (1, P, d), expanded ids (1, P))."""
        (row,), table = self.encode_prompts([ids], [images], image_mode)
        x = torch.tensor([row], device=self.device)
        return self.embed(x, table), x

    def forward(self, input_ids: Tensor, *, image_features: Tensor | None = None,
                inputs_embeds: Tensor | None = None, **kw) -> Tensor:
        """LLaDA's forward (same keywords) over ids whose negative entries are image vectors."""
        if inputs_embeds is None:
            inputs_embeds = self.embed(input_ids, image_features)
        return self.language_model(input_ids.clamp(min=0), inputs_embeds=inputs_embeds, **kw)
