"""The fixed-shape dual-cache block step (decoding/graphs.py), run eagerly on the CPU: the
logits of the plain step within float tolerance, and the same greedy decodes, whatever the
mix of rows (lengths, blocks, admission order, free slots, a refreshing row in the span)."""

import dataclasses

import pytest
import torch
from reference import config
from tolerance import TINY, assert_f32_close

import stdec
from stdec.api import encode
from stdec.decoding import graphs
from stdec.decoding.config import DecodeConfig
from stdec.decoding.engine import Engine
from stdec.tasks import get_task
from stdec.tasks.base import format_prompt
from stdec.testing import random_dream_model, random_model, tiny_config, tiny_dream_config

MODELS = {
    "llada": lambda: random_model(tiny_config(n_kv_heads=2), peak=16.0).fuse(),
    "dream": lambda: random_dream_model(tiny_dream_config(), peak=16.0).fuse(),
}
PROMPTS = [[5, 9, 33], [7, 101, 54, 8, 12], [40, 41], [9] * 11, [77, 3, 5, 6]]


def decode_all(model, prompts, cfg, *, static: bool, max_batch: int, max_length: int = 64):
    engine = Engine(model, max_batch=max_batch, max_length=max_length, static_step=static)
    requests = [engine.submit(p, cfg) for p in prompts]
    engine.run()
    assert all(r.state == "done" for r in requests), [r.error for r in requests]
    return [r.ids for r in requests], engine


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("max_batch", [1, 3, 8])
def test_static_steps_decode_what_the_plain_ones_do(arch, max_batch):
    # max_batch 3 < 5 prompts: rows arrive mid-flight, sit at different blocks, and free
    # slots and refreshing rows pad the span; 8: a span wider than the rows in flight
    model = MODELS[arch]()
    for policy, gen_length in (("threshold", 24), ("stdec", 21), ("fixed", 24)):
        cfg = config(policy, "dual", gen_length=gen_length)  # 21: a shorter last block
        plain, _ = decode_all(model, PROMPTS, cfg, static=False, max_batch=max_batch)
        static, engine = decode_all(model, PROMPTS, cfg, static=True, max_batch=max_batch)
        assert static == plain, policy
        step = engine.runner.static
        assert step is not None and step.inputs  # the path was taken


@torch.inference_mode()
def test_the_static_step_gives_the_plain_steps_logits():
    model = MODELS["llada"]()
    cfg = config("threshold", "dual")
    engine = Engine(model, max_batch=4, max_length=64, static_step=True)
    for p in PROMPTS[:3]:
        engine.submit(p, cfg)
    engine.step()  # admission and the refresh forwards: every row is now mid-block
    rows = [r for r in engine.slots if r is not None]
    static = engine.runner.forward("dual", rows)
    engine.runner.static = None
    plain = engine.runner.forward("dual", rows)
    assert_f32_close(static, plain, **TINY)


def test_shapes_are_bucketed_so_few_graphs_cover_every_mix():
    model = MODELS["llada"]()
    step = graphs.StaticBlockStep(model, model.new_cache(8, 1025), max_batch=8,
                                  max_length=1024, capture=True)
    assert not step.capture  # CPU: nothing is captured
    assert step.shape([0], [40], 32) == (1, 256, 32)
    assert step.shape([2, 0], [300, 20], 32) == (4, 512, 32)  # slots 0 .. 2 -> span 4
    assert step.shape([5], [1024], 16) == (8, 1024, 16)
    assert step.shape([7, 3], [1000, 900], 32) == (8, 1024, 32)  # keys never past the cache


@torch.inference_mode()
def test_rows_with_other_block_lengths_take_the_plain_step_together():
    model = MODELS["llada"]()
    engine = Engine(model, max_batch=2, max_length=64, static_step=True)
    engine.submit([5, 9, 33], config("threshold", "dual"))
    engine.submit([7, 8], dataclasses.replace(config("threshold", "dual"), block_length=4))
    engine.step()  # both refresh: now both are mid-block, with blocks of 8 and 4
    rows = [r for r in engine.slots if r is not None]
    logits = engine.runner.forward("dual", rows)
    assert logits.shape[:2] == (2, 8) and not engine.runner.static.inputs


def test_static_steps_decode_testbed_problems_as_the_plain_ones():
    model, tok = stdec.load("testbed", device="cpu")
    prompts = encode(tok, [format_prompt(p) for name in ("gsm", "lists")
                           for p in get_task(name).problems("test")[:4]], chat=True)
    cfg = DecodeConfig(policy="stdec", cache="dual", gen_length=64, block_length=32)
    plain, _ = decode_all(model, prompts, cfg, static=False, max_batch=4, max_length=256)
    static, _ = decode_all(model, prompts, cfg, static=True, max_batch=4, max_length=256)
    assert static == plain


def test_no_cuda_graphs_reaches_the_loaded_model(checkpoint, monkeypatch):
    from stdec.cli import main

    seen = {}
    real = stdec.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(stdec, "load", spy)
    assert main(["generate", "Sort [2, 1].", "--model", str(checkpoint), "--gen-length", "8",
                 "--block-length", "8", "--no-cuda-graphs"]) == 0
    assert seen["cuda_graphs"] is False
    assert stdec.load(checkpoint, device="cpu", cuda_graphs=False)[0].cuda_graphs is False
    engine = Engine(stdec.load(checkpoint, device="cpu")[0])
    assert not engine.runner.static_wanted  # the CPU keeps the plain step unless asked


def test_a_compiled_model_decodes_what_the_plain_one_does():
    from stdec.api import compile_model

    plain = MODELS["llada"]()
    compiled = MODELS["llada"]()
    compile_model(compiled)
    cfg = config("threshold", "none")  # one kind of step: one compile (tens of seconds)
    a, _ = decode_all(plain, PROMPTS[:2], cfg, static=False, max_batch=2)
    b, _ = decode_all(compiled, PROMPTS[:2], cfg, static=False, max_batch=2)
    assert a == b
