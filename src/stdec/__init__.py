"""stdec: fast decoding for diffusion language models (STDec and its peers)."""

from stdec.api import Generation, generate, load
from stdec.decoding.config import CACHE_MODES, POLICY_NAMES, DecodeConfig
from stdec.decoding.loop import RowStats, Trace, decode
from stdec.errors import StdecError
from stdec.models import load_model, save_model

__all__ = [
    "CACHE_MODES",
    "POLICY_NAMES",
    "DecodeConfig",
    "Generation",
    "RowStats",
    "StdecError",
    "Trace",
    "decode",
    "generate",
    "load",
    "load_model",
    "save_model",
]
__version__ = "0.1.0"
