"""compat="fast-dllm" against Fast-dLLM's own Dream block generation, and where it applies.

tests/official/dream_fast_dllm.py ran NVlabs/Fast-dLLM's dream/model code (its Dream model,
its generation_utils_block.py) at tiny random weights with 1, 2 and 4 KV heads, with the
prefix and the dual cache, under its threshold rule and its steps path, and stored the
weights, the ids, the forward that committed each position and the number of forwards. Here
stdec decodes the same prompts from the same weights and must give all three exactly.
"""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from stdec.decoding.config import DecodeConfig, build
from stdec.decoding.engine import decode
from stdec.errors import StdecError
from stdec.models import DreamConfig, DreamModel
from stdec.testing import random_model, tiny_config

HERE = Path(__file__).parent / "fixtures" / "official" / "dream_fast_dllm"
REF = json.loads((HERE / "reference.json").read_text())
MODELS: dict[int, DreamModel] = {}


def official_model(kv_heads: int) -> DreamModel:
    if kv_heads not in MODELS:
        model = DreamModel(DreamConfig(**REF["config"], num_key_value_heads=kv_heads))
        model.load_state_dict(load_file(HERE / f"kv{kv_heads}.safetensors"), strict=True)
        MODELS[kv_heads] = model.eval()
    return MODELS[kv_heads]


def stdec_config(case: dict) -> DecodeConfig:
    rule = (dict(policy="threshold", tau=case["threshold"])
            if case["alg"] == "confidence_threshold" else dict(policy="fixed", steps=case["steps"]))
    return DecodeConfig(**rule, cache=case["cache"], compat="fast-dllm",
                        gen_length=REF["gen_length"], block_length=REF["block_length"],
                        stop_at_eos=False, trace=True)


def case_id(case: dict) -> str:
    alg = "threshold" if case["alg"] == "confidence_threshold" else f"steps{case['steps']}"
    return f"kv{case['kv_heads']}-{case['cache']}-{alg}-p{len(case['prompt'])}"


@pytest.mark.parametrize("case", REF["results"], ids=case_id)
def test_matches_fast_dllm_dream_block_generation(case):
    model = official_model(case["kv_heads"])
    out = decode(model, [case["prompt"]], stdec_config(case))
    assert out.ids[0].tolist() == case["ids"]
    assert out.trace.step[0].tolist() == case["commits"]  # the forward of every commit
    assert out.stats[0].nfe == case["nfe"]


def test_the_cases_tell_the_semantics_apart():
    """The stored decodes would catch each difference: compat none decodes them otherwise."""
    differ = 0
    for case in REF["results"][:: 4]:
        cfg = stdec_config(case)
        plain = DecodeConfig(**{**cfg.options(), "compat": "none"})
        out = decode(official_model(case["kv_heads"]), [case["prompt"]], plain)
        differ += out.trace.step[0].tolist() != case["commits"]
    assert differ >= len(REF["results"][:: 4]) - 1


def test_fixed_steps_may_commit_nothing_and_take_every_forward():
    """The reference's steps path (docs/decoding.md): S forwards a block whatever happens;
    at one step a position, the forced first commit leaves its second forward nothing and
    its last two."""
    steps = [c for c in REF["results"] if c["alg"] != "confidence_threshold"]
    assert all(c["nfe"] == c["steps"] for c in steps)
    for c in steps:
        if c["steps"] == REF["gen_length"]:
            first_block = c["commits"][: REF["block_length"]]
            assert 2 not in first_block and first_block.count(REF["block_length"]) == 2


# ---- where compat applies: one sentence, before any model work ----

@pytest.mark.parametrize("options, words", [
    (dict(cache="none"), "prefix and dual caches only"),
    (dict(cache="dkv"), "prefix and dual caches only"),
    (dict(policy="stdec"), "rules are threshold and fixed"),
    (dict(temperature=0.7), "greedily"),
    (dict(gen_length=20, block_length=8), "divide gen_length"),
    (dict(block_length=1, gen_length=8), "2 or more positions"),
    (dict(policy="fixed", steps=3, gen_length=24, block_length=8), "2 or more steps"),
    (dict(compat="fastdllm"), "unknown compat 'fastdllm'"),
])
def test_refused_where_it_has_no_meaning(options, words):
    base = dict(policy="threshold", cache="dual", compat="fast-dllm", gen_length=32,
                block_length=8)
    with pytest.raises(StdecError, match=words) as err:
        build({**base, **options})
    assert "\n" not in str(err.value)


def test_strings_from_every_entrance_parse():
    cfg = build({"compat": "fast-dllm", "cache": "prefix", "policy": "threshold"})
    assert cfg.compat == "fast-dllm" and DecodeConfig().compat == "none"
    assert "compat" in DecodeConfig.shared_fields()  # the CLI, server and lm-eval read these


def test_refused_for_a_model_that_is_not_dream():
    llada = random_model(tiny_config())
    cfg = DecodeConfig(policy="threshold", cache="dual", compat="fast-dllm", gen_length=16,
                       block_length=8)
    with pytest.raises(StdecError, match="for Dream"):
        decode(llada, [[5, 6, 7]], cfg)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_rows_decode_as_they_do_alone_beside_rows_of_stdecs_semantics(cache):
    model = official_model(2)
    prompts = [REF["results"][0]["prompt"], REF["results"][1]["prompt"]] * 2
    ours = DecodeConfig(policy="threshold", tau=0.9, cache=cache, compat="fast-dllm",
                        gen_length=24, block_length=8, stop_at_eos=False)
    configs = [ours, DecodeConfig(**{**ours.options(), "compat": "none"})] * 2
    configs[2:] = configs[2:][::-1]
    together = decode(model, prompts, configs)
    for row, (p, c) in enumerate(zip(prompts, configs, strict=True)):
        alone = decode(model, [p], c)
        assert together.ids[row].tolist() == alone.ids[0].tolist()
        assert together.stats[row].nfe == alone.stats[0].nfe


@pytest.mark.parametrize("flags, words", [
    (["--compat", "fastdllm"], "unknown compat 'fastdllm'"),
    (["--compat", "fast-dllm", "--cache", "dual", "--policy", "threshold"], "for Dream"),
])
def test_the_command_line_refuses_in_one_sentence(capsys, flags, words):
    from stdec.cli import main

    assert main(["generate", "Sort [2, 1].", "--model", "testbed", *flags]) != 0
    err = capsys.readouterr().err
    assert words in err and err.strip().count("\n") == 0
