"""Known public checkpoints (their special ids and decoding defaults) and hub-id resolution."""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from stdec.errors import StdecError

__all__ = ["LLADA_V_SUPPRESS", "LLADA_V_SYSTEM", "PRESETS", "Preset", "is_hub_id", "preset_for",
           "resolve_model"]

# what a checkpoint download needs: config, safetensors weights, tokenizer files
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]


# Each rule's setting on the real 7-8B dLLMs, from its paper or public code (all of them were
# published on LLaDA-8B-Instruct and Dream-7B): Fast-dLLM's global threshold 0.9 (threshold,
# factor 1), LocalLeap 0.9/0.75/4, EB-sampler gamma 0.1, KLASS 0.9/0.01/2, WINO 0.6/0.9,
# CreditDecoding 0.95/0.65/0.7/0.5.
# STDec: tau_high is the model's published global threshold, 0.9, so that at every position
# and step STDec's threshold is at most Fast-dLLM's and it commits at least what Fast-dLLM
# would. tau_low 0.75 is the threshold LocalLeap publishes for positions next to committed
# anchors on these models: the same evidence (decoded neighbours) judged the same way. sigma 2
# keeps the lowering within about 6 tokens of decoded text (the testbed's tuned width).
# rho 0.9 with window 2: a prediction that held for two steps needs 0.81 deep in masks and
# ~0.68 next to decoded text, no looser than LocalLeap's neighbours; the testbed's tuned
# rho 0.97 was for its own over-confident small model.
REAL_MODEL_RULES = (
    ("tau", 0.9), ("factor", 1.0),
    ("leap_tau_hi", 0.9), ("leap_tau_lo", 0.75), ("leap_radius", 4),
    ("tau_high", 0.9), ("tau_low", 0.75), ("sigma", 2.0), ("rho", 0.9), ("window", 2),
    ("eb_gamma", 0.1),
    ("klass_tau", 0.9), ("klass_kl", 0.01), ("klass_steps", 2),
    ("wino_draft", 0.6), ("wino_verify", 0.9),
    ("credit_tau", 0.95), ("credit_decay", 0.65), ("credit_lambda", 0.7), ("credit_alpha", 0.5),
)


# LLaDA-V (github.com/ML-GSAI/LLaDA-V, train/llava/):
# - its generate_with_embeds (model/language_model/modeling_llada.py) sets the logits of
#   <|endoftext|> 126081, <|startoftext|> 126080, <|start_header_id|> 126346 and
#   <|end_header_id|> 126347 to -inf at masked positions before both its argmax and its
#   softmax confidence; the text LLaDA's and Dream's official generate suppress nothing.
# - its conversation template conv_llava_llada (conversation.py), which the demo
#   (generate_demo.py) and the evaluation (eval/scripts/evaluate.sh, conv_template=llava_llada)
#   use, puts this system message before every chat.
# - the demo decodes gen_length 128 in one block of 128 with steps 128, one token a step,
#   which is the fixed rule's own default pace (steps = gen_length), so the preset leaves
#   steps unset and a changed gen_length keeps that pace. The evaluation also decodes one
#   block, at gen_length 2 to 96 per task, with steps = gen_length or half of it.
# - the official code has no threshold rule; the threshold rules keep REAL_MODEL_RULES' 0.9,
#   Fast-dLLM's published threshold on LLaDA-8B-Instruct, LLaDA-V's language model.
LLADA_V_SUPPRESS = (126080, 126081, 126346, 126347)
LLADA_V_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand "
                  "the visual content that the user provides, and assist the user with a "
                  "variety of tasks using natural language.")


@dataclass(frozen=True)
class Preset:
    model_class: str  # the stdec class load_model builds for it
    mask_token_id: int
    eos_token_ids: tuple[int, ...]  # every end token: EOS and the end of a chat turn
    gen_length: int = 256
    block_length: int = 32
    rules: tuple[tuple[str, float | int], ...] = field(default=REAL_MODEL_RULES)
    suppress_ids: tuple[int, ...] = ()  # never predicted at a masked position
    system_prompt: str | None = None  # the system message its official chat template adds
    # its official tokenizer_image_token drops the token after each <image> (models/images.py)
    drop_after_image: bool = False

    @property
    def decoding(self) -> dict:
        """The checkpoint's decoding defaults: lengths, each rule's setting and the ids it
        never predicts."""
        extra = {"suppress_ids": self.suppress_ids} if self.suppress_ids else {}
        return {"gen_length": self.gen_length, "block_length": self.block_length,
                **dict(self.rules), **extra}


PRESETS = {
    # <|endoftext|> pads, <|eot_id|> ends a turn
    "GSAI-ML/LLaDA-8B-Instruct": Preset("LLaDAModelLM", 126336, (126081, 126348)),
    # LLaDA-8B-Instruct after VRPO: the same tokenizer, ids and published decoding lengths
    "GSAI-ML/LLaDA-1.5": Preset("LLaDAModelLM", 126336, (126081, 126348)),
    # <|endoftext|>
    "Dream-org/Dream-v0-Instruct-7B": Preset("DreamModel", 151666, (151643,)),
    # LLaDA-V: LLaDA-8B-Instruct's tokenizer and ids under a SigLIP tower; the official
    # demo's lengths, suppressed ids and system message (LLADA_V_* above)
    "GSAI-ML/LLaDA-V": Preset("LlavaLLaDAModelLM", 126336, (126081, 126348), gen_length=128,
                              block_length=128, suppress_ids=LLADA_V_SUPPRESS,
                              system_prompt=LLADA_V_SYSTEM, drop_after_image=True),
    # LaViDa-LLaDA and LaViDa-Reason: LLaDA's ids; LaViDa's evaluation decodes 256 tokens in
    # blocks of min(128, gen_length) (eval/lmms_eval/models/llava_llada.py); its
    # tokenizer_image_token (llava/mm_utils.py) is LLaDA-V's
    "jacklishufan/lavida-llada-v1.0-instruct": Preset(
        "LlavaLladaForMaskedDiffusion", 126336, (126081, 126348), block_length=128,
        drop_after_image=True),
    "hbXNov/lavida-llada-reason": Preset(
        "LlavaLladaForMaskedDiffusion", 126336, (126081, 126348), block_length=128,
        drop_after_image=True),
    # LaViDa-Dream: Dream's ids
    "jacklishufan/lavida-dream-v1.0-instruct": Preset(
        "LlavaDreamForMaskedDiffusion", 151666, (151643,), block_length=128,
        drop_after_image=True),
}


def preset_for(name: str, config: dict) -> Preset | None:
    """The preset of a hub id, or of a local copy recognised by its architecture and mask id."""
    if name in PRESETS:
        return PRESETS[name]
    archs = set(config.get("architectures") or [])
    for preset in PRESETS.values():
        if preset.model_class in archs and config.get("mask_token_id") == preset.mask_token_id:
            return preset
    return None


def is_hub_id(name: str) -> bool:
    """'owner/name' as the Hugging Face Hub spells repository ids."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def resolve_model(name_or_path: str | Path) -> Path:
    """A checkpoint folder for a local path (used as is) or a Hugging Face Hub id.

    A hub id is downloaded (config, safetensors and tokenizer files only) into the Hugging
    Face cache; with HF_HUB_OFFLINE set only that cache is looked in.
    """
    path = Path(name_or_path)
    if path.exists() or not is_hub_id(str(name_or_path)):
        return path
    from huggingface_hub import snapshot_download

    offline = _offline()
    try:
        return Path(snapshot_download(str(name_or_path), allow_patterns=HUB_PATTERNS,
                                      local_files_only=offline))
    except Exception as err:  # not found, gated, no network: many types, one message
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        where = ("is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
                 if offline else f"could not be downloaded from the Hugging Face Hub ({reason})")
        raise StdecError(f"{str(name_or_path)!r} is not a local folder and {where}; check the "
                         "name, or pass the path of a checkpoint folder.") from None
