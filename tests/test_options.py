"""The one builder of a DecodeConfig from typed or string options, and its checks: every
entrance (CLI, bench specs, model_args, extra_body) reaches a rule's options through it."""

from dataclasses import dataclass

import pytest

from stdec.decoding import registry
from stdec.decoding.config import DecodeConfig, build, check_options
from stdec.decoding.defaults import Defaults
from stdec.errors import StdecError


def test_strings_are_read_as_each_options_type():
    cfg = build({"policy": "threshold", "tau": "0.5", "gen_length": "64", "trace": "yes",
                 "stop_at_eos": "False"})
    assert (cfg.tau, cfg.gen_length, cfg.trace, cfg.stop_at_eos) == (0.5, 64, True, False)
    assert type(cfg.tau) is float and type(cfg.gen_length) is int


def test_none_unsets_an_option_that_may_be_unset():
    assert build({"policy": "fixed", "steps": "none"}).steps is None
    assert build({"policy": "fixed", "steps": "None", "k": 2}).k == 2


@pytest.mark.parametrize("options, message", [
    ({"trace": "maybe"}, "trace must be true or false, got 'maybe'"),
    ({"gen_length": "64.5"}, "gen_length must be an integer, got '64.5'"),
    ({"policy": "threshold", "tau": "high"}, "tau must be a number, got 'high'"),
    # a string option of another rule is refused by name before it is read
    ({"policy": "stdec", "tau": "0.5"}, "tau does not apply to policy stdec; stdec's options"),
    ({"policy": "stdec", "tua": "0.5"}, "unknown decoding option 'tua'"),
])
def test_bad_strings_are_refused_in_one_sentence(options, message):
    with pytest.raises(StdecError, match=message):
        build(options)


def test_the_checkpoints_policy_is_taken_when_the_user_names_none():
    defaults = Defaults({"policy": "threshold", "tau": 0.7, "rho": 0.5})
    cfg = build({}, defaults)
    assert (cfg.policy, cfg.tau) == ("threshold", 0.7)  # stdec's rho is left aside
    assert build({"policy": "stdec"}, defaults).rho == 0.5


@pytest.mark.parametrize("options, message", [
    ({"window": 1.5}, "window must be a positive integer, got 1.5"),
    ({"window": 0}, "window must be a positive integer, got 0"),
    ({"klass_steps": -1}, "klass_steps must be a positive integer, got -1"),
    ({"tau": "x"}, "tau must be a number, got 'x'"),
    ({"tau": 1.5}, r"tau must be in \(0, 1\], got 1.5"),
])
def test_check_options_checks_each_rules_values_before_any_model_work(options, message):
    # what the CLI checks before it loads a checkpoint, the policy not yet known
    with pytest.raises(StdecError, match=message):
        check_options(None, options)


def test_help_covers_every_option_and_only_options():
    helps = DecodeConfig.option_help()
    assert "params" not in helps and "params" not in DecodeConfig.shared_fields()
    assert set(DecodeConfig.shared_fields()) <= set(helps) and "tau_high" in helps
    kinds = {name: kind for name, (kind, _, _) in DecodeConfig.shared_fields().items()}
    assert kinds["stop_at_eos"] is bool and kinds["temperature"] is float
    assert kinds["gen_length"] is int and kinds["cache"] is str


def test_a_rules_plain_dataclass_fields_are_options_without_help_or_range():
    # a rule may declare its parameters without `param`: they work, with empty help

    @dataclass(frozen=True)
    class Plain:
        width: int = 3
        scale: float | None = None

    assert registry.param_fields(Plain) == {"width": (int, 3, "", None),
                                            "scale": (float, None, "", None)}
