"""Known public checkpoints (their special ids and decoding defaults) and hub-id resolution."""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from stdec.errors import StdecError

__all__ = ["PRESETS", "Preset", "is_hub_id", "preset_for", "resolve_model"]

# what a checkpoint download needs: config, safetensors weights, tokenizer files
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]


@dataclass(frozen=True)
class Preset:
    model_class: str  # the stdec class load_model builds for it
    mask_token_id: int
    eos_token_ids: tuple[int, ...]  # every end token: EOS and the end of a chat turn
    gen_length: int = 256
    block_length: int = 32


PRESETS = {
    # <|endoftext|> pads, <|eot_id|> ends a turn
    "GSAI-ML/LLaDA-8B-Instruct": Preset("LLaDAModelLM", 126336, (126081, 126348)),
    # <|endoftext|>
    "Dream-org/Dream-v0-Instruct-7B": Preset("DreamModel", 151666, (151643,)),
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
