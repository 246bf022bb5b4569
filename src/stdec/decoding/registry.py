"""One entry per decoding rule: everything stdec knows about a rule besides its function.

An entry holds the rule's name, its parameters (a frozen dataclass: fields, defaults, valid
ranges, one line of doc each), what the engine must compute for it beyond confidence, whether
it may take tokens back, its default tuning grid and its rows in the paper table. The rule's
function (decoding/policies.py, or any importable callable) is named here and imported only
when a decode runs, so this module imports no torch: the CLI and `--help` read it as they
start.

DecodeConfig, the CLI flags, bench and tune, the server's extra_body, lm-eval's model_args and
the paper table all read these entries. A new rule is one function and one `register` call:

    @dataclass(frozen=True)
    class MyParams:
        cut: float = param(0.8, "my: commit positions above this confidence", "(0, 1]")

    register(Rule("my", MyParams, "mypackage.rules:my_rule", grid={"cut": (0.7, 0.8, 0.9)}))
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

from stdec.errors import StdecError

__all__ = ["BENCH_DEFAULT", "POLICY_NAMES", "VANILLA", "VANILLA_OPTIONS", "Rule", "get", "names",
           "param", "param_fields", "register", "unregister"]

# what the engine can compute for a rule besides confidence (policies.StepState)
INPUTS = frozenset({"entropy", "kl", "token_conf", "drafted", "memory"})
# valid ranges a parameter may declare, and how each is checked
RANGES: dict[str, Callable[[Any], bool]] = {
    "(0, 1]": lambda v: 0 < v <= 1,
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
}


def param(default, help: str, range: str | None = None):
    """A rule parameter: its default, one line of doc, and its valid range (RANGES)."""
    if range is not None and range not in RANGES:
        raise ValueError(f"unknown range {range!r}; use one of {', '.join(RANGES)}")
    # called at import, where no test can see a mutant: no mutants here
    return field(default=default, metadata={"help": help, "range": range})  # pragma: no mutate


def param_fields(params: type) -> dict[str, tuple[type, Any, str, str | None]]:
    """name -> (type, default, help, range) of a parameters dataclass; the type is int, float,
    bool or str (`int | None` gives int)."""
    hints = get_type_hints(params)
    out = {}
    for f in fields(params):
        kind = hints[f.name]
        kind = next((t for t in getattr(kind, "__args__", ()) if t is not type(None)), kind)
        out[f.name] = (kind, f.default, f.metadata.get("help", ""), f.metadata.get("range"))
    return out


def check_params(params) -> None:
    """Each parameter's type and range, in one sentence naming the bad value."""
    for name, (kind, _, _, rng) in param_fields(type(params)).items():
        check_value(name, getattr(params, name), kind, rng)


def check_value(name: str, value, kind: type, rng: str | None) -> None:
    """One option's type and range (None: unset)."""
    if value is None:
        return
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        what = {">= 1": "a positive integer", ">= 0": "an integer >= 0"}.get(rng, "an integer")
        raise StdecError(f"{name} must be {what}, got {value!r}.")
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)
                          or math.isnan(value)):
        raise StdecError(f"{name} must be a number, got {value!r}.")
    if rng is not None and not RANGES[rng](value):
        if kind is int and rng in (">= 1", ">= 0"):
            what = "a positive integer" if rng == ">= 1" else "an integer >= 0"
            raise StdecError(f"{name} must be {what}, got {value!r}.")
        where = "in " if rng[0] in "([" else ""
        raise StdecError(f"{name} must be {where}{rng}, got {value}.")


@dataclass(frozen=True)
class Rule:
    """A decoding rule. `function` is the rule itself, or "module:attribute" naming it;
    it takes (conf, pred, state, config) and returns the (B, L) bool commit mask."""

    name: str
    params: type  # a frozen dataclass whose fields are the rule's options (see `param`)
    function: str | Callable
    needs: frozenset[str] = frozenset()  # INPUTS the engine fills into the rule's state
    remasks: bool = False  # may mask a committed token of the active block again
    grid: Mapping[str, tuple] = field(default_factory=dict)  # stdec tune's default grid
    paper: tuple[tuple[str, str, str], ...] = ()  # (label, policy spec, cache) paper rows
    aliases: Mapping[str, str] = field(default_factory=dict)  # spec spellings -> spec

    def __post_init__(self):
        unknown = set(self.needs) - INPUTS
        if unknown:
            raise ValueError(f"rule {self.name!r} needs unknown inputs {sorted(unknown)}; "
                             f"the engine computes {', '.join(sorted(INPUTS))}")
        options = param_fields(self.params)
        for key in self.grid:
            if key not in options:
                raise ValueError(f"rule {self.name!r}'s grid sets {key!r}, not one of its "
                                 f"options ({', '.join(options)})")

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(param_fields(self.params))

    def resolve(self) -> Callable:
        """The rule's function, imported on first use."""
        if callable(self.function):
            return self.function
        module, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(module), attr)


RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    """Add a rule; every entrance (generate, bench, tune, the CLI, the server) sees it."""
    if rule.name in RULES:
        raise StdecError(f"a rule named {rule.name!r} is already registered.")
    RULES[rule.name] = rule
    return rule


def unregister(name: str) -> None:
    RULES.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(RULES)


def get(name: str) -> Rule:
    if name not in RULES:
        raise StdecError(f"unknown policy {name!r}; choose one of {', '.join(RULES)}.")
    return RULES[name]


# ---- the rules stdec ships (functions in decoding/policies.py) ----

def _builtin(name: str, params: type, **entry) -> Rule:
    # called at import (see `param`)
    function = f"stdec.decoding.policies:{name}"  # pragma: no mutate
    return register(Rule(name, params, function, **entry))  # pragma: no mutate


@dataclass(frozen=True)
class FixedParams:
    steps: int | None = param(
        None, "fixed: total steps over gen_length, split over blocks by their lengths "
        "(default gen_length)", ">= 1")
    k: int | None = param(
        None, "fixed: tokens committed per step, the same as steps = gen_length / k", ">= 1")

    def __post_init__(self):
        check_params(self)
        if self.steps is not None and self.k is not None:
            raise StdecError(f"fixed takes steps ({self.steps}) or k ({self.k}), not both; "
                             "k tokens a step is steps = gen_length / k.")

    def total_steps(self, gen_length: int) -> int:
        if self.steps is not None:
            return self.steps
        return gen_length // self.k if self.k is not None else gen_length

    def check(self, config) -> None:
        """A whole block must take a whole number of steps, at most one per position."""
        G, bl = config.gen_length, config.block_length
        if self.k is not None:
            if bl % self.k:
                raise StdecError(f"fixed:k={self.k} must divide block_length ({bl}) so that "
                                 "every block takes whole steps.")
            return
        steps = self.total_steps(G)
        if steps * bl % G == 0 and 1 <= steps * bl // G <= bl:
            return
        if G % bl == 0:
            blocks = G // bl
            raise StdecError(f"steps ({steps}) must be a multiple of the number of blocks "
                             f"({blocks}) between {blocks} and gen_length ({G}).")
        raise StdecError(f"steps ({steps}) must give a block of {bl} a whole number of steps "
                         f"from 1 to {bl}: steps x {bl} / gen_length ({G}) is not one.")

    def steps_per_block(self, config, length: int | None = None) -> int:
        """The steps of a block of `length` positions (a whole block by default; the last
        block is shorter when block_length does not divide gen_length): a whole block's
        share of the steps, and a shorter block as many as its positions need at that pace."""
        bl = config.block_length
        if self.k is not None:
            whole = bl // self.k
        else:
            whole = self.total_steps(config.gen_length) * bl // config.gen_length
        length = bl if length is None else length
        return -(-whole * length // bl)  # rounded up


@dataclass(frozen=True)
class ThresholdParams:
    tau: float = param(
        0.9, "threshold: commit every masked position with confidence >= tau", "(0, 1]")


@dataclass(frozen=True)
class FactorParams:
    factor: float = param(
        1.0, "factor: commit the n-th most confident while c >= 1 - f/(n+1)", "> 0")


@dataclass(frozen=True)
class LocalLeapParams:
    leap_tau_hi: float = param(
        0.9, "localleap: confidence that makes a position an anchor", "(0, 1]")
    leap_tau_lo: float = param(0.75, "localleap: confidence needed next to an anchor", "(0, 1]")
    leap_radius: int = param(
        4, "localleap: how far from an anchor the lower threshold applies", ">= 0")

    def __post_init__(self):
        check_params(self)
        if self.leap_tau_lo > self.leap_tau_hi:
            raise StdecError(f"leap_tau_lo ({self.leap_tau_lo}) must not exceed leap_tau_hi "
                             f"({self.leap_tau_hi}).")


# model-neutral defaults, the real models' setting (tau_high = the global threshold 0.9;
# models/presets.py says why). A checkpoint carries its own: the testbed's tuned setting is
# in assets/testbed/decoding_defaults.json (decoding/defaults.py)
@dataclass(frozen=True)
class StdecParams:
    tau_high: float = param(0.9, "stdec: threshold deep inside masked regions", "(0, 1]")
    tau_low: float = param(
        0.75, "stdec: threshold next to decoded tokens (= tau_high: no spatial)", "(0, 1]")
    sigma: float = param(
        2.0, "stdec: width in tokens of the Gaussian that smooths the thresholds", "> 0")
    rho: float = param(
        0.9, "stdec: relax factor for temporally stable predictions (1: off)", "(0, 1]")
    window: int = param(2, "stdec: steps a prediction must stay the same to be relaxed", ">= 1")

    def __post_init__(self):
        check_params(self)
        if self.tau_low > self.tau_high:
            raise StdecError(f"tau_low ({self.tau_low}) must not exceed tau_high "
                             f"({self.tau_high}): positions next to decoded tokens get the "
                             "lower threshold.")


# EB-sampler (Ben-Hamu et al. 2025): gamma as diffusers' EntropyBoundScheduler ships it
@dataclass(frozen=True)
class EbParams:
    eb_gamma: float = param(
        0.1, "eb: entropy budget (nats): commit the lowest-entropy positions while their "
        "summed entropy less the largest stays <= eb_gamma", "> 0")


# KLASS (Kim et al. 2025): the public code's defaults (conf 0.9, KL 0.01, history 2)
@dataclass(frozen=True)
class KlassParams:
    klass_tau: float = param(0.9, "klass: confidence a position must exceed", "(0, 1]")
    klass_kl: float = param(
        0.01, "klass: KL divergence between successive steps' distributions must stay below "
        "it", "> 0")
    klass_steps: int = param(
        2, "klass: consecutive steps the KL must stay below klass_kl", ">= 1")


# WINO (Hong et al. 2025): the public code's wide-in 0.6, narrow-out 0.9
@dataclass(frozen=True)
class WinoParams:
    wino_draft: float = param(
        0.6, "wino: draft every masked position above this confidence", "(0, 1]")
    wino_verify: float = param(
        0.9, "wino: mask a drafted token again when its probability falls below this",
        "(0, 1]")

    def __post_init__(self):
        check_params(self)
        if self.wino_draft > self.wino_verify:
            raise StdecError(f"wino_draft ({self.wino_draft}) must not exceed wino_verify "
                             f"({self.wino_verify}): drafts are verified at the higher "
                             "threshold.")


# CreditDecoding (Wang et al. 2025): dInfer/SGLang's threshold 0.95, decay 0.65, fusion 0.7,
# exponent 0.5
@dataclass(frozen=True)
class CreditParams:
    credit_tau: float = param(
        0.95, "credit: commit when the credit-fused confidence reaches it", "(0, 1]")
    credit_decay: float = param(
        0.65, "credit: factor a position's credit decays by each step", "(0, 1]")
    credit_lambda: float = param(
        0.7, "credit: weight of log(1 + credit) added to the logit (0: no credit)", ">= 0")
    credit_alpha: float = param(
        0.5, "credit: a step adds confidence ** credit_alpha to the credit", "> 0")


# LLaDA's one token a step: the baseline of every speedup, as options and as a bench spec
VANILLA_OPTIONS = {"policy": "fixed", "k": 1}
VANILLA = "fixed:k=1"
# stdec bench's default grid: vanilla, fixed at 4 tokens a step, Fast-dLLM's threshold, STDec
BENCH_DEFAULT = (VANILLA, "fixed:k=4", "threshold", "stdec")
# the paper table, in registration order: the baselines, STDec, then the newer rules. Vanilla
# is LLaDA's one token a step with no cache; Half-Step the same at half the steps; dKV-Cache
# vanilla decoding over the delayed cache; Fast-dLLM the 0.9 threshold with the dual cache.
_builtin("fixed", FixedParams, grid={"k": (1, 2, 4, 8)},
         paper=(("Vanilla", VANILLA, "none"), ("Half-Step", "fixed:k=2", "none"),
                ("dKV-Cache", VANILLA, "dkv")),
         aliases={"halfstep": "fixed:k=2", "fixed:half": "fixed:k=2"})  # the paper's Half-Step
_builtin("threshold", ThresholdParams, grid={"tau": (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)},
         paper=(("Fast-dLLM", "threshold:tau=0.9", "dual"),))
_builtin("factor", FactorParams, grid={"factor": (0.5, 1.0, 2.0, 3.0, 4.0)})
_builtin("localleap", LocalLeapParams,
         grid={"leap_tau_hi": (0.8, 0.9), "leap_tau_lo": (0.5, 0.6, 0.7)},
         paper=(("LocalLeap", "localleap", "dual"),))
_builtin("stdec", StdecParams,
         grid={"tau_high": (0.8, 0.9, 0.95), "tau_low": (0.5, 0.6, 0.7), "sigma": (1.0, 2.0),
               "rho": (0.8, 0.9), "window": (2,)},
         paper=(("STDec", "stdec", "dual"),))
_builtin("eb", EbParams, needs=frozenset({"entropy"}),
         grid={"eb_gamma": (0.01, 0.1, 0.3, 1.0, 3.0)}, paper=(("EB-Sampler", "eb", "dual"),))
_builtin("klass", KlassParams, needs=frozenset({"kl", "memory"}),
         grid={"klass_tau": (0.6, 0.7, 0.8, 0.9), "klass_kl": (0.01, 0.1),
               "klass_steps": (1, 2)},
         paper=(("KLASS", "klass", "dual"),))
_builtin("wino", WinoParams, needs=frozenset({"token_conf", "drafted"}), remasks=True,
         grid={"wino_draft": (0.4, 0.5, 0.6, 0.7), "wino_verify": (0.8, 0.9)},
         paper=(("WINO", "wino", "dual"),))
_builtin("credit", CreditParams, needs=frozenset({"memory"}),
         grid={"credit_tau": (0.6, 0.7, 0.8, 0.9, 0.95)},
         paper=(("CreditDecoding", "credit", "dual"),))

POLICY_NAMES = names()  # the rules stdec ships; names() also lists rules registered later
