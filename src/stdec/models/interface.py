"""The model interface: what the engine (stdec.decoding) and stdec.generate rely on, no more.

A model is a torch module with a config, a device and a dtype, called on token ids; it makes
its own KV cache. Its traits are class attributes that every model class declares (nothing
guesses them with a default):

  logits_shift       0: position i's logits come from hidden state i (LLaDA); 1: from i - 1
                     (Dream), so cached steps feed one more position on the left. LLaDA-V and
                     LaViDa read their language model's.
  prefix_lm          prompt positions attend to the prompt only (LaViDa); the engine builds
                     that mask, the model just takes it. The model's default: a request's
                     DecodeConfig.prefix_lm may turn it off (only where it is on).
  greedy_first_token under the prefix LM, a row's first forward commits the first generated
                     position alone, by argmax (LaViDa-Dream's official generate).
  system_prompt      the system message the model was trained with, put before chat prompts
                     (LaViDa's; LLaDA-V's, which stdec.load sets from its preset), or None.
  drop_after_image   (vision-language models) prompts drop the token after each "<image>" as
                     LLaVA's tokenizer_image_token does (models/images.py): a known
                     checkpoint's, from its preset; False for stdec's own.
  cuda_graphs        whether the engine may capture its fixed-shape block steps as CUDA graphs
                     (decoding/graphs.py; CUDA only).
  decoding_defaults  the checkpoint's decoding options (preset < the folder's file), which
                     stdec.generate lays the user's over; empty for a model built in memory.

The last two, and a known checkpoint's system_prompt and drop_after_image, are per loaded
model: stdec.load sets them through `configure`, the one setter, which a model class inherits
from `Configurable`. A vision-language model (VisionLanguageLM) also turns a prompt's image
placeholders into image vectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import Tensor

    from stdec.models.cache import KVCache, SlotCache

__all__ = ["NO_DEFAULTS", "Configurable", "DiffusionLM", "ModelConfig", "VisionLanguageLM"]

NO_DEFAULTS: Mapping[str, Any] = MappingProxyType({})  # decoding_defaults of a model in memory


class ModelConfig(Protocol):
    """The config fields the engine reads."""

    mask_token_id: int
    eos_token_id: int
    max_sequence_length: int


class DiffusionLM(Protocol):
    """A diffusion language model as the engine drives it."""

    config: ModelConfig
    logits_shift: int
    prefix_lm: bool
    greedy_first_token: bool
    system_prompt: str | None
    cuda_graphs: bool
    decoding_defaults: Mapping[str, Any]

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def __call__(self, input_ids: Tensor, *, position_ids: Tensor | None = None,
                 attention_mask: Tensor | None = None, cache: KVCache | SlotCache | None = None,
                 logits_slice: slice | None = None,
                 logits_index: Tensor | None = None) -> Tensor:
        """Logits (B, L', V) for input_ids (B, L) fed at position_ids (B, L).

        attention_mask: (B, keys) or (B, L, keys), bool (True: may attend) or additive floats
        cache:          K/V of the fed positions is written into it, attention runs over it
        logits_slice:   the fed positions whose logits are wanted, the same for every row
        logits_index:   (B, L') the same, per row
        """

    def new_cache(self, batch: int, length: int) -> KVCache:
        """A zeroed KV cache of `batch` rows of `length` positions, in the model's dtype."""

    def configure(self, *, cuda_graphs: bool | None = None,
                  decoding_defaults: Mapping[str, Any] | None = None,
                  system_prompt: str | None = None,
                  drop_after_image: bool | None = None) -> DiffusionLM:
        """Set the per-load fields (None keeps one); returns the model."""


class VisionLanguageLM(DiffusionLM, Protocol):
    """A diffusion language model that also sees images (LLaDA-V, LaViDa). A prompt holds one
    placeholder id per image; expanded, it holds one id per image vector, -1 - j for row j
    of a feature table, which a forward reads through `image_features`."""

    def __call__(self, input_ids: Tensor, *, position_ids: Tensor | None = None,
                 attention_mask: Tensor | None = None, cache: KVCache | SlotCache | None = None,
                 logits_slice: slice | None = None, logits_index: Tensor | None = None,
                 image_features: Tensor | None = None) -> Tensor:
        """As DiffusionLM's; image_features (F, d) is the table negative ids read from."""

    def encode_prompts(self, prompts: list[list[int]], images: list[list[Image.Image]],
                       image_mode: str = "anyres") -> tuple[list[list[int]], Tensor | None]:
        """Each prompt with its placeholders expanded, and the feature table (runs the vision
        tower); fails with one sentence when a prompt's placeholders and images disagree.
        image_mode: DecodeConfig.image_mode ("anyres": the checkpoint's layout; "pad")."""

    def prompt_length(self, ids: list[int], images: list[Image.Image],
                      image_mode: str = "anyres") -> int:
        """Positions a prompt takes once its images are expanded (the tower does not run)."""


class Configurable:
    """`configure` for model classes (inherited beside torch.nn.Module): the per-load fields
    are declared, with their class defaults, by each model class."""

    cuda_graphs: bool
    decoding_defaults: Mapping[str, Any]
    system_prompt: str | None
    drop_after_image: bool = False

    def configure(self, *, cuda_graphs: bool | None = None,
                  decoding_defaults: Mapping[str, Any] | None = None,
                  system_prompt: str | None = None, drop_after_image: bool | None = None):
        if system_prompt is not None:  # a known checkpoint's (models/presets.py)
            self.system_prompt = system_prompt
        if drop_after_image is not None:
            self.drop_after_image = drop_after_image
        if cuda_graphs is not None:
            self.cuda_graphs = cuda_graphs
        if decoding_defaults is not None:
            self.decoding_defaults = decoding_defaults  # kept as given: it may name sources
        return self
