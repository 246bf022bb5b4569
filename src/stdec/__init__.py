"""stdec: fast decoding for diffusion language models (STDec and its peers)."""

import importlib

__all__ = [
    "CACHE_MODES",
    "POLICY_NAMES",
    "DecodeConfig",
    "Generation",
    "RowStats",
    "StdecError",
    "Trace",
    "decode",
    "decoding_defaults",
    "generate",
    "load",
    "load_model",
    "save_model",
]
__version__ = "0.1.0"

# where each public name lives; imported on first use, so that `import stdec.cli` (and
# `stdec --help`) does not pay for torch
_HOME = {
    "Generation": "stdec.api", "generate": "stdec.api", "load": "stdec.api",
    "decoding_defaults": "stdec.api",
    "CACHE_MODES": "stdec.decoding.config", "POLICY_NAMES": "stdec.decoding.config",
    "DecodeConfig": "stdec.decoding.config", "RowStats": "stdec.decoding.engine",
    "Trace": "stdec.decoding.engine", "decode": "stdec.decoding.engine",
    "StdecError": "stdec.errors", "load_model": "stdec.models", "save_model": "stdec.models",
}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'stdec' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
