"""On CUDA only (skipped elsewhere; benchmarks/gpu_session.sh runs it when a GPU is lent):
block steps replayed as CUDA graphs decode exactly what eager steps do, in bf16 and float32,
for LLaDA and Dream, with rows of several lengths arriving mid-flight."""

import pytest
import torch
from reference import config

from stdec.decoding.engine import Engine
from stdec.testing import random_dream_model, random_model, tiny_config, tiny_dream_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

MODELS = {
    "llada": lambda: random_model(tiny_config(n_kv_heads=2), peak=16.0),
    "dream": lambda: random_dream_model(tiny_dream_config(), peak=16.0),
}
PROMPTS = [[5, 9, 33], [7, 101, 54, 8, 12], [40, 41], [9] * 11, [77, 3, 5, 6]]


def decode_all(model, cfg, *, graphs: bool, static: bool | None = None):
    model.configure(cuda_graphs=graphs)
    engine = Engine(model, max_batch=3, max_length=64, static_step=static)
    requests = [engine.submit(p, cfg) for p in PROMPTS]
    engine.run()
    assert all(r.state == "done" for r in requests), [r.error for r in requests]
    return [r.ids for r in requests], engine


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graph_replays_decode_what_eager_steps_do(arch, dtype):
    model = MODELS[arch]().fuse().to("cuda", dtype)
    for policy in ("threshold", "stdec"):
        cfg = config(policy, "dual")
        # the same fixed-shape step run eagerly: the same kernels, so the same bits
        eager, eager_engine = decode_all(model, cfg, graphs=False, static=True)
        replayed, engine = decode_all(model, cfg, graphs=True)
        assert engine.runner.static.graphs and not eager_engine.runner.static.graphs
        assert replayed == eager, policy
        if dtype == torch.float32:  # and the plain step's decodes (bf16 may round apart)
            plain, plain_engine = decode_all(model, cfg, graphs=False)
            assert plain_engine.runner.static is None and plain == replayed, policy


def test_small_tensors_reach_the_device_without_blocking():
    from stdec.decoding.graphs import on_device

    t = on_device([[3, 1], [4, 1]], torch.device("cuda"))
    assert t.device.type == "cuda" and t.tolist() == [[3, 1], [4, 1]]
