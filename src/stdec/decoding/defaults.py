"""Decoding defaults belong to the checkpoint. Precedence, lowest first: DecodeConfig's code
defaults, the preset of a known checkpoint (models/presets.py), the checkpoint folder's
decoding_defaults.json, what the user passes. This module merges the middle two; the
entrances (stdec.generate, the CLI, bench, tune, lm-eval, the server) lay the user's
options over the result."""

import json
from pathlib import Path

from stdec.decoding import registry
from stdec.decoding.config import DecodeConfig, Defaults, build
from stdec.errors import StdecError
from stdec.models.presets import preset_for

__all__ = ["FILE", "checkpoint_defaults", "effective", "every_option", "read_defaults_file"]

FILE = "decoding_defaults.json"  # in a checkpoint folder: {"option": value, ...}


def read_defaults_file(path: str | Path) -> dict:
    """A folder's decoding_defaults.json as DecodeConfig options, checked by DecodeConfig."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StdecError(f"{str(path)!r} is not valid JSON ({err}).") from None
    if not isinstance(raw, dict):
        raise StdecError(f"{str(path)!r} must hold one JSON object of decoding options.")
    known = DecodeConfig.option_help()
    for name in raw:
        if name not in known:
            raise StdecError(f"{str(path)!r} sets unknown decoding option {name!r}; the "
                             f"options are {', '.join(sorted(known))}.")
    # bad values fail here, naming the option: the shared ones, then each rule's own
    shared = {k: v for k, v in raw.items() if k in DecodeConfig.shared_fields()}
    for rule in registry.RULES.values():
        own = {k: v for k, v in raw.items() if k in rule.options}
        if own or rule.name == shared.get("policy", rule.name):
            DecodeConfig(**{**shared, **own, "policy": rule.name})
    return raw


def checkpoint_defaults(name: str | Path, folder: Path | None, config: dict) -> Defaults:
    """The preset of a known checkpoint (by hub id `name` or by its config.json), overlaid
    with the folder's decoding_defaults.json: the options that differ from the code's, each
    with its source."""
    out = Defaults()
    preset = preset_for(str(name), config)
    if preset is not None:
        out = out.layered(preset.decoding, f"stdec's preset for {name}")
    if folder is not None and (Path(folder) / FILE).is_file():
        out = out.layered(read_defaults_file(Path(folder) / FILE), f"the model's {FILE}")
    return out


def effective(defaults: dict, options: dict | None = None) -> DecodeConfig:
    """The user's options over a checkpoint's defaults over the code's."""
    return build(options, defaults)


def every_option(defaults: dict) -> dict:
    """Every option's effective value under these defaults: the shared ones (with the
    default policy) and each registered rule's own."""
    out: dict = {}
    for name in registry.names():
        out.update(build({"policy": name}, defaults).options())
    return {**out, **build(None, defaults).options()}
