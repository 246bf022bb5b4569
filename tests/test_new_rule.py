"""A new rule is one function and one registry entry: every entrance sees it at once."""

import json
from dataclasses import dataclass

import pytest
import torch

import stdec
from stdec.bench import BenchConfig, parse_policy, run_bench
from stdec.cli import main
from stdec.decoding import registry
from stdec.decoding.config import DecodeConfig, build
from stdec.decoding.engine import decode
from stdec.decoding.registry import Rule, param
from stdec.testing import random_model, tiny_config
from stdec.tune import parse_grid


@dataclass(frozen=True)
class TopParams:
    top: int = param(2, "top: commit the `top` most confident masked positions a step", ">= 1")


def top(conf, pred, state, cfg):
    """The `top` most confident masked positions (ties: leftmost first)."""
    ranked = conf.masked_fill(~state.masked, -1.0).argsort(dim=1, descending=True, stable=True)
    pick = torch.zeros_like(state.masked).scatter(1, ranked[:, : cfg.top], True)
    return pick & state.masked


@pytest.fixture
def toy():
    """The toy rule, registered for one test (conftest puts the registry back after it)."""
    return registry.register(Rule("top", TopParams, top, grid={"top": (1, 2, 4)}))


def test_the_rule_decodes_through_the_engine(toy):
    model = random_model(tiny_config(), peak=16.0)
    out = decode(model, [[5, 6, 7]], DecodeConfig(policy="top", top=4, gen_length=16,
                                                  block_length=8))
    assert out.stats[0].nfe == 4  # 16 tokens, 4 a step
    fixed = decode(model, [[5, 6, 7]], DecodeConfig(policy="fixed", k=4, gen_length=16,
                                                    block_length=8))
    assert torch.equal(out.ids, fixed.ids)  # the same rule as fixed at 4 tokens a step


def test_generate_bench_and_tune_take_it(toy, checkpoint, tmp_path):
    model, tokenizer = stdec.load(checkpoint)
    out = stdec.generate(model, tokenizer, "hi", policy="top", top=8, gen_length=16,
                         block_length=8)
    assert out.stats[0].nfe == 2
    assert parse_policy("top:top=4").config(16, 8).top == 4
    assert parse_grid("top", None) == {"top": [1, 2, 4]}
    records = run_bench(BenchConfig(model=str(checkpoint), out=str(tmp_path), tasks=("lists",),
                                    policies=("top:top=4",), lengths=("standard",),
                                    limit=2, repeats=1), progress=False)
    assert {r["label"] for r in records} == {"fixed:k=1", "top:top=4"}


def test_the_cli_lists_and_takes_its_options(toy, checkpoint, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "--policy top" in capsys.readouterr().out
    assert main(["generate", "hi", "--model", str(checkpoint), "--policy", "top", "--top", "8",
                 "--gen-length", "16", "--block-length", "8", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["settings"]["top"] == 8 and record["stats"]["nfe"] == 2


def test_its_options_are_its_own(toy):
    with pytest.raises(stdec.StdecError, match="top does not apply to policy threshold"):
        build({"policy": "threshold", "top": "3"})
    with pytest.raises(stdec.StdecError, match="tau does not apply to policy top; top's "
                       "options are top"):
        build({"policy": "top", "tau": "0.5"})
    with pytest.raises(stdec.StdecError, match="top must be a positive integer, got 0"):
        DecodeConfig(policy="top", top=0)


def test_unregistered_it_is_gone(toy):
    registry.unregister("top")
    with pytest.raises(stdec.StdecError, match="unknown policy 'top'"):
        DecodeConfig(policy="top")


def test_the_server_takes_it_as_extra_body(toy, checkpoint):
    import openai
    from test_serve import start

    testbed = stdec.load("testbed", device="cpu")
    server, thread, url = start(testbed, max_batch=2)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        got = client.completions.create(model="testbed", prompt="Reverse the list [4, 5].",
                                        max_tokens=16, extra_body={"policy": "top", "top": 8})
        want = stdec.generate(*testbed, "Reverse the list [4, 5].", policy="top", top=8,
                              cache="dual", gen_length=16, block_length=16)
        assert got.choices[0].text == want.texts[0]
        with pytest.raises(openai.BadRequestError, match="tau does not apply to policy top"):
            client.completions.create(model="testbed", prompt="hi", max_tokens=16,
                                      extra_body={"policy": "top", "tau": 0.5})
    finally:
        server.should_exit = True
        thread.join(10)
