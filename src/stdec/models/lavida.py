"""Native LaViDa-LLaDA: LLaDA-V's parts (SigLIP tower, MLP projector, newline vector) around
stdec's LLaDA, with LaViDa's pooled image features and prefix-LM attention.

What the official code (github.com/jacklishufan/LaViDa, llava/) fixes, and this file follows
(docs/lavida-notes.md has the line references):
- config.json: architectures ["LlavaLladaForMaskedDiffusion"] with model_type "llava_llada" (the
  same type as LLaDA-V: the architecture tells them apart); the language model's keys are
  LLaDA's own (d_model, n_layers, ...); mm_projector_type "mlp2x_gelu"; image_aspect_ratio
  "anyres" (no maximum, so no shrinking) over five grids of 384-pixel tiles;
  mm_patch_merge_type "spatial_unpad"; mm_spatial_pool_mode "bilinear".
- tensors: the language model under LLaDA's own names (model.transformer.wte, .blocks.{i}.*,
  .ln_f, .ff_out); the tower, projector and newline as LLaDA-V names them.
- image features: every crop (the whole image squashed to one tile, then the tiles of the best
  grid) goes through the tower's last remaining layer and the projector, then is pooled from
  27x27 to 14x14 vectors (bilinear resize to ceil(27 / 2); average or max pooling with stride
  2 when the config says so). The base crop's 196 vectors come first, with no newline; the
  tiles form one map, unpadded on the pooled grid, with a newline vector ending every row.
  A 384x384 image takes 406 positions, a 768x384 one 602.
- pad mode (lmms-eval's for prompts with several images): one grey-padded crop per image, as
  LLaDA-V's, which the official code encodes unpooled with no newline (the 4-D images path of
  llava_arch.prepare_inputs_labels_for_multimodal): 729 positions an image at real size.
- prompt: the chat template with LaViDa's system prompt, "<image>\\n" before the question.
- attention: the model was trained, and is run, as a prefix LM: prompt positions attend to
  the prompt only (the official code caches the prompt's K/V from a forward over the prompt
  alone), generated positions attend to everything. The engine builds that mask for models
  with `prefix_lm`, so every stdec cache mode gives the official cached logits. The official
  evaluation of LaViDa-LLaDA runs without it (eval/run.sh passes the misspelt `refix_lm`), every
  position attending to all: a request's `prefix_lm` option picks either.

LaViDa-Dream is the same around stdec's Dream: architectures ["LlavaDreamForMaskedDiffusion"],
model_type "llava_dream", Qwen2 keys, Dream's own tensor names (model.embed_tokens,
model.layers.*, model.norm, lm_head), logits shifted right by one. Its official generate, with
the prefix LM, first commits the first answer token alone: the argmax of the prompt-only
forward's last logits, whatever its confidence (dream/generation_utils.py, `first_token`).
Under the prefix-LM mask those are the logits any forward gives that position, so the engine
does the same at a row's first forward (the trait `greedy_first_token`).
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from stdec.errors import StdecError
from stdec.models.dream import DreamConfig, DreamModel
from stdec.models.llada import LLaDAConfig
from stdec.models.llada_v import (
    LM,
    MM_NAMES,
    LLaDAVConfig,
    LLaDAVModel,
    best_resolution,
    pad_to_square,
    padded,
    preprocess_image,
    rename_prefix,
    unpad_box,
)

__all__ = ["ARCHITECTURE", "DREAM_ARCHITECTURE", "LaViDaConfig", "LaViDaDreamConfig",
           "LaViDaDreamModel", "LaViDaModel", "SYSTEM_PROMPT", "lavida_class", "pooled_side"]

ARCHITECTURE = "LlavaLladaForMaskedDiffusion"
DREAM_ARCHITECTURE = "LlavaDreamForMaskedDiffusion"
SYSTEM_PROMPT = ("You are a helpful language and vision assistant. You are able to understand "
                 "the visual content that the user provides, and assist the user with a variety "
                 "of tasks using natural language.")
PINPOINTS = [(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]  # (w, h) pixels
POOL_MODES = ("bilinear", "average", "max")
NAMES = (*MM_NAMES, ("model.transformer.", LM))  # LaViDa-LLaDA's: LLaDA's own under "model."


def pooled_side(side: int, mode: str) -> int:
    """Vectors per side of one crop after LaViDa's 2D pooling (stride 2)."""
    return math.ceil(side / 2) if mode == "bilinear" else side // 2


@dataclass
class LaViDaConfig(LLaDAVConfig):
    """LaViDa-LLaDA's config.json: LLaDA's own keys for `text`, LLaVA's for the rest."""

    text_config_class = LLaDAConfig  # class attributes (no annotation: not fields)
    architecture, model_type = ARCHITECTURE, "llava_llada"
    mm_keys = {**LLaDAVConfig.mm_keys, "mm_spatial_pool_mode": "pool_mode"}

    image_aspect_ratio: str = "anyres"
    image_grid_pinpoints: list | str = field(default_factory=lambda: [list(p) for p in PINPOINTS])
    pool_mode: str = "bilinear"

    def __post_init__(self):
        super().__post_init__()
        if self.image_aspect_ratio != "anyres" or self.mm_patch_merge_type != "spatial_unpad":
            raise StdecError(
                f"this LaViDa config has image_aspect_ratio {self.image_aspect_ratio!r} and "
                f"mm_patch_merge_type {self.mm_patch_merge_type!r}; stdec's LaViDa reads "
                "'anyres' with 'spatial_unpad' (the released models'), where the official "
                "code's token layout is unambiguous.")
        if self.pool_mode not in POOL_MODES:
            raise StdecError(f"mm_spatial_pool_mode {self.pool_mode!r} is not one of "
                             f"{', '.join(POOL_MODES)} (LaViDa's own choices).")

    @property
    def pooled(self) -> int:  # vectors per crop side after pooling
        return pooled_side(self.side, self.pool_mode)

    @classmethod
    def from_dict(cls, raw: dict) -> "LaViDaConfig":
        # the language model's keys checked as for a plain LLaDA (or Dream) folder
        return cls.around(cls.text_config_class.from_dict(raw), raw)

    def to_dict(self) -> dict:
        return {**self.text.to_dict(), "architectures": [self.architecture],
                "model_type": self.model_type,
                "mm_vision_tower": "google/siglip-so400m-patch14-384",
                "mm_hidden_size": self.vision["hidden_size"], "mm_vision_select_layer": -2,
                "mm_projector_type": self.projector_type, "use_mm_proj": True,
                "image_aspect_ratio": self.image_aspect_ratio,
                "image_grid_pinpoints": [list(p) for p in self.image_grid_pinpoints],
                "mm_patch_merge_type": self.mm_patch_merge_type,
                "mm_spatial_pool_mode": self.pool_mode, "vision_config": self.vision}


class LaViDaModel(LLaDAVModel):
    """LaViDa-LLaDA: LLaDAVModel's parts, LaViDa's checkpoint names, pooled features and
    prefix-LM attention."""

    prefix_lm = True  # prompt positions attend to the prompt only (the engine's mask)
    system_prompt = SYSTEM_PROMPT

    @staticmethod
    def from_checkpoint_name(name: str) -> str:
        """A LaViDa tensor name -> this module's (unknown names pass through unchanged)."""
        return rename_prefix(name, NAMES) or name

    @staticmethod
    def to_checkpoint_name(name: str) -> str:
        return rename_prefix(name, NAMES, reverse=True) or name

    def pool(self, feats: Tensor) -> Tensor:
        """(N, side**2, d) projected crop features -> (N, pooled**2, d)."""
        cfg = self.config
        n, _, d = feats.shape
        x = feats.view(n, cfg.side, cfg.side, d).permute(0, 3, 1, 2)  # (N, d, side, side)
        if cfg.pool_mode == "bilinear":
            x = F.interpolate(x, size=[cfg.pooled, cfg.pooled], mode="bilinear")
        elif cfg.pool_mode == "average":
            x = F.avg_pool2d(x, 2)
        else:
            x = F.max_pool2d(x, 2)
        return x.flatten(2).transpose(1, 2)

    def image_features(self, image: Image.Image, image_mode: str = "anyres") -> Tensor:
        """(image_token_count, d): the pooled base crop, then the pooled tiles' unpadded map
        with a newline vector ending each row; in pad mode one crop, unpooled, no newline."""
        cfg = self.config
        if padded(cfg, image_mode):
            return self.encode_images(pad_to_square(image, cfg.tile).to(self.device))[0]
        pixels, (cols, rows) = preprocess_image(image, cfg)
        feats = self.pool(self.encode_images(pixels.to(self.device)))
        s, d = cfg.pooled, feats.shape[-1]
        x = feats[1:].view(rows, cols, s, s, d).permute(4, 0, 2, 1, 3)
        x = x.reshape(d, rows * s, cols * s)  # (d, H, W): the tiles' grid as one map
        top, bottom, left, right = unpad_box(rows * s, cols * s, image.size)
        x = x[:, top:bottom, left:right]
        h, w = x.shape[1:]
        x = torch.cat([x, self.image_newline[:, None, None].expand(d, h, 1)], dim=2)
        return torch.cat([feats[0], x.flatten(1).T])  # (pooled**2 + h * (w + 1), d)

    def image_token_count(self, size: tuple[int, int], image_mode: str = "anyres") -> int:
        return image_token_count(size, self.config, image_mode)


def image_token_count(size: tuple[int, int], cfg: LaViDaConfig, image_mode: str = "anyres"
                      ) -> int:
    """How many prompt positions one image of `size` (w, h) takes in LaViDa."""
    if padded(cfg, image_mode):
        return cfg.side ** 2
    cols, rows = (d // cfg.tile for d in best_resolution(size, cfg.image_grid_pinpoints))
    s = cfg.pooled
    top, bottom, left, right = unpad_box(rows * s, cols * s, size)
    return s * s + (bottom - top) * (right - left + 1)


@dataclass
class LaViDaDreamConfig(LaViDaConfig):
    """LaViDa-Dream: `text` is a DreamConfig, read from Qwen2 keys."""

    text_config_class = DreamConfig
    architecture, model_type = DREAM_ARCHITECTURE, "llava_dream"


class LaViDaDreamModel(LaViDaModel):
    """LaViDa-Dream: LaViDaModel around stdec's Dream, under Dream's own tensor names."""

    language_model_class = DreamModel
    # with the prefix LM, the first answer token is the prompt's argmax, committed alone
    greedy_first_token = True

    @staticmethod
    def from_checkpoint_name(name: str) -> str:
        # the vision parts first: Dream's own names start with "model." too
        return rename_prefix(name, MM_NAMES) or "language_model." + name

    @staticmethod
    def to_checkpoint_name(name: str) -> str:
        return rename_prefix(name, MM_NAMES, reverse=True) or name.removeprefix("language_model.")


def lavida_class(raw: dict) -> type[LaViDaModel] | None:
    """The LaViDa class a config.json names, or None (LLaDA-V shares LaViDa-LLaDA's
    model_type: the architecture tells them apart)."""
    archs = raw.get("architectures") or []
    if DREAM_ARCHITECTURE in archs or raw.get("model_type") == "llava_dream":
        return LaViDaDreamModel
    return LaViDaModel if ARCHITECTURE in archs else None
