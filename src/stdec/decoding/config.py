"""DecodeConfig: how to decode, in one validated dataclass; and `build`, the one way every
entrance (stdec.generate, the CLI, bench, tune, lm-eval, the server) turns options into one.

A DecodeConfig holds the options every rule shares and `params`, the chosen rule's own
parameters (a dataclass from its registry entry, decoding/registry.py). The rule's options
read through: `config.tau` is `config.params.tau` when the policy is threshold. Options of
another rule are refused, naming the chosen rule's own.
"""

import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from stdec.decoding import compat, registry
from stdec.errors import StdecError

__all__ = ["CACHE_MODES", "IMAGE_MODES", "POLICY_NAMES", "DecodeConfig", "Defaults", "build",
           "check_for_model", "check_names", "check_options", "check_vocab", "parse_value"]

POLICY_NAMES = registry.POLICY_NAMES
CACHE_MODES = ("none", "prefix", "dual", "dkv")
IMAGE_MODES = ("anyres", "pad")
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, init=False)
class DecodeConfig:
    """How to decode. `DecodeConfig(policy="threshold", tau=0.8, cache="dual")`: the shared
    options below, and the policy's own (`stdec generate --help` lists every rule's)."""

    policy: str = _opt("stdec", "commit rule (decoding/registry.py lists them)")
    cache: str = _opt("none", f"KV cache mode, one of {', '.join(CACHE_MODES)}")
    compat: str = _opt(
        "none", "none: stdec's semantics; fast-dllm: Dream's prefix and dual caches decode as "
        "Fast-dLLM's Dream block code does (docs/decoding.md)")
    gen_length: int = _opt(128, "number of tokens to generate (masks appended to the prompt)")
    block_length: int = _opt(
        32, "semi-autoregressive block size (the last block is shorter when it does not divide "
        "gen_length)")
    stop_at_eos: bool = _opt(
        True, "finish a row once it has committed EOS with everything before it decoded"
    )
    temperature: float = _opt(0.0, "0 is greedy; > 0 samples with Gumbel-max noise in float64")
    seed: int = _opt(0, "seed of the sampling noise (used only when temperature > 0)")
    trace: bool = _opt(False, "record the step at which each position was committed")
    # dkv (dKV-Cache, Ma et al. 2025): its public generate()'s cache_reloading_step
    dkv_interval: int = _opt(
        4, "dkv: a full forward refreshes every K/V every dkv_interval steps of a block")
    image_mode: str = _opt(
        "anyres", "how a vision-language model lays out each image: anyres (the checkpoint's "
        "own setting) or pad (lmms-eval's multi-image mode: padded square on grey, one crop)")
    prefix_lm: bool | None = _opt(
        None, "LaViDa: prompt positions attend to the prompt only (on, as trained) or every "
        "position to all (off, as its official evaluation runs); none: the model's default")
    suppress_ids: tuple[int, ...] = _opt(
        (), "token ids never predicted at a masked position (a comma-separated list; LLaDA-V's "
        "preset sets the four its official generate suppresses)")
    params: Any = _opt(None, "the policy's own parameters (its registry entry's dataclass)")

    def __init__(self, **options):
        for f in fields(self):
            if f.name != "params":
                object.__setattr__(self, f.name, options.pop(f.name, f.default))
        rule = registry.get(self.policy)  # an unknown policy fails here, naming the rules
        params = options.pop("params", None)
        if not isinstance(params, rule.params):  # None, or another rule's (a changed policy)
            params = None
        check_names(self.policy, options)
        params = replace(params, **options) if params is not None else rule.params(**options)
        registry.check_params(params)
        object.__setattr__(self, "params", params)
        self._check()

    def __getattr__(self, name: str):
        # only reached when normal lookup fails: the policy's own options read through
        params = self.__dict__.get("params")
        if params is not None and not name.startswith("_") and hasattr(params, name):
            return getattr(params, name)
        raise AttributeError(f"{type(self).__name__} with policy "
                             f"{self.__dict__.get('policy')!r} has no option {name!r}")

    def _check(self):
        _one_of("cache", self.cache, CACHE_MODES)
        _positive_int("gen_length", self.gen_length)
        _positive_int("block_length", self.block_length)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float):
            raise StdecError(f"temperature must be a number, got {self.temperature!r}.")
        if self.temperature < 0:
            raise StdecError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}.")
        _positive_int("dkv_interval", self.dkv_interval)
        _one_of("image_mode", self.image_mode, IMAGE_MODES)
        if self.prefix_lm not in (None, True, False):
            raise StdecError(f"prefix_lm must be true, false or none, got {self.prefix_lm!r}.")
        object.__setattr__(self, "suppress_ids", _token_ids("suppress_ids", self.suppress_ids))
        check = getattr(self.params, "check", None)  # a rule's checks against shared options
        if check is not None:
            check(self)
        compat.check(self)

    @property
    def num_blocks(self) -> int:
        """Blocks of block_length, the last one shorter when it does not divide gen_length."""
        return -(-self.gen_length // self.block_length)

    def options(self) -> dict:
        """Every option as one flat dict: the shared ones and the policy's own."""
        shared = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "params"}
        return {**shared, **{f.name: getattr(self.params, f.name) for f in fields(self.params)}}

    @classmethod
    def option_help(cls) -> dict[str, str]:
        """The help of every option: the shared ones, then each registered rule's."""
        out = {f.name: f.metadata["help"] for f in fields(cls) if f.name != "params"}
        for rule in registry.RULES.values():
            for name, (_, _, help, _) in registry.param_fields(rule.params).items():
                out.setdefault(name, help)
        return out

    @classmethod
    def shared_fields(cls) -> dict[str, tuple[type, Any, str]]:
        """name -> (type, default, help) of the options every rule shares."""
        return {f.name: (f.type, f.default, f.metadata["help"])
                for f in fields(cls) if f.name != "params"}


def check_options(policy: str | None, options: Mapping[str, Any]):
    """What can be checked of options before a checkpoint's defaults are known: that each is
    shared or the policy's own (when the policy is given), and each rule option's range."""
    if policy is not None:
        check_names(policy, options)
    for rule in registry.RULES.values():
        own = registry.param_fields(rule.params)
        for name, value in options.items():
            if name in own:
                registry.check_value(name, value, own[name][0], own[name][3])


def check_names(policy: str, options: Mapping[str, Any]):
    """Refuse options that are neither shared nor the policy's own: another rule's, or
    nobody's."""
    own = registry.get(policy).options
    for name in options:
        if name in own or name in DecodeConfig.shared_fields():
            continue
        mine = f"{policy}'s options are {', '.join(own)}" if own else f"{policy} has no options"
        if any(name in rule.options for rule in registry.RULES.values()):
            raise StdecError(f"{name} does not apply to policy {policy}; {mine}.")
        shared = ", ".join(DecodeConfig.shared_fields())
        raise StdecError(f"unknown decoding option {name!r}; the options are {shared}, and "
                         f"{mine}.")


class Defaults(dict):
    """Decoding options from a checkpoint, each with where it came from (`sources[name]`, e.g.
    "the model's decoding_defaults.json"), so that a conflict can name it."""

    def __init__(self, values: Mapping | None = None, sources: Mapping[str, str] | None = None):
        super().__init__(values or {})
        self.sources = dict(sources or {})

    def layered(self, values: Mapping, source: str) -> "Defaults":
        """These defaults with `values` laid over them, each from `source`."""
        return Defaults({**self, **values}, {**self.sources, **dict.fromkeys(values, source)})


def build(options: Mapping[str, Any] | None = None,
          defaults: Mapping[str, Any] | None = None) -> DecodeConfig:
    """The user's options over a checkpoint's defaults over the code's, validated.

    `options` may be typed values or strings (a command line, model_args, a bench spec):
    strings are read as the option's type. Defaults that belong to another policy than the
    chosen one are left out (a checkpoint carries every rule's setting). A user's option that
    does not apply to the policy is refused, naming the policy's own; an error that involves
    a default names where that default came from.
    """
    options = dict(options or {})
    defaults = defaults if defaults is not None else {}
    policy = str(options.get("policy") or defaults.get("policy") or DecodeConfig.policy)
    rule = registry.get(policy)
    kinds = {name: kind for name, (kind, *_) in DecodeConfig.shared_fields().items()}
    kinds.update({name: kind for name, (kind, *_) in registry.param_fields(rule.params).items()})
    check_names(policy, {k: v for k, v in options.items() if k not in kinds})
    given = {k: parse_value(k, v, kinds[k]) if isinstance(v, str) else v
             for k, v in options.items()}
    inherited = {k: v for k, v in defaults.items() if k in kinds and k not in given}
    try:
        return DecodeConfig(**{**inherited, **given, "policy": policy})
    except StdecError as err:
        sources = getattr(defaults, "sources", {})
        blamed = [k for k in inherited if k in sources and _names(str(err), k)]
        if not blamed:
            raise
        why = "; ".join(f"{k} {inherited[k]} comes from {sources[k]}" for k in blamed)
        raise StdecError(f"{str(err).rstrip('.')} ({why}; set {blamed[0]} to override it).") \
            from None


def check_vocab(config: DecodeConfig, vocab_size: int):
    """The config's token ids against a model's vocabulary, before any model work."""
    bad = [i for i in config.suppress_ids if i >= vocab_size]
    if bad:
        raise StdecError(f"suppress_ids has {bad[0]}, which is not a token id of this model; "
                         f"its ids run from 0 to {vocab_size - 1}.")


def parse_value(name: str, value: Any, kind: type):
    """An option given as text (or as lm-eval's already-parsed value) as `kind`: int, float,
    bool, str or a tuple of ints (a comma- or space-separated list, or a JSON list); "none"
    is None for an option that may be unset, and no ids for a list."""
    if kind == tuple[int, ...]:
        return _id_list(name, value)
    if isinstance(value, str) and value.strip().lower() == "none":
        return "none" if kind is str else None
    if isinstance(kind, types.UnionType):  # bool | None: "none" was read above
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    if kind is bool:
        text = str(value).strip().lower()
        if isinstance(value, bool):
            return value
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise StdecError(f"{name} must be true or false, got {value!r}.")
    if kind is str:
        return str(value).strip()
    try:
        if isinstance(value, bool):
            raise ValueError
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value.strip() if isinstance(value, str) else value)
        return float(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise StdecError(f"{name} must be {what}, got {value!r}.") from None


def check_for_model(config: DecodeConfig, model):
    """Refuse, before any work, an option the model cannot honour."""
    if config.prefix_lm is not None and not model.prefix_lm:
        raise StdecError(f"prefix_lm={str(config.prefix_lm).lower()} is a choice of models "
                         f"trained as prefix LMs (LaViDa); {type(model).__name__} always "
                         "attends bidirectionally, so leave prefix_lm unset.")
    compat.check_model(config, model)
    check_vocab(config, model.config.vocab_size)


def _id_list(name: str, value: Any) -> tuple[int, ...]:
    # model_args splits on commas, so a list there is written with spaces (or ;)
    if not isinstance(value, str):
        return _token_ids(name, value)
    text = value.strip()
    if text.lower() in ("", "none", "[]"):
        return ()
    if text.startswith("["):
        try:
            return _token_ids(name, json.loads(text))
        except json.JSONDecodeError:
            pass
    items = [v for v in re.split(r"[\s,;]+", text) if v]
    if not all(re.fullmatch(r"\d+", v) for v in items):
        raise StdecError(f"{name} must be token ids (non-negative integers) separated by commas "
                         f"or spaces, or a JSON list, got {value!r}.")
    return _token_ids(name, [int(v) for v in items])


def _token_ids(name: str, value: Any) -> tuple[int, ...]:
    """Token ids as one sorted tuple without repeats (equal configs group as one in a batch)."""
    if value is None:
        return ()
    items = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items):
        raise StdecError(f"{name} must be token ids (non-negative integers), got {value!r}.")
    return tuple(sorted(set(items)))


def _names(message: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", message) is not None


def _one_of(name: str, value, choices: tuple[str, ...]):
    if value not in choices:
        raise StdecError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}.")


def _positive_int(name: str, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StdecError(f"{name} must be a positive integer, got {value!r}.")
