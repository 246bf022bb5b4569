"""End-to-end decode speed at real dLLM shape with random weights: the engine, the model and
a rule's real commit pattern, without a download.

    python benchmarks/e2e_gpu.py                    # LLaDA-8B and Dream-7B shapes (a GPU)
    SMALL=1 python benchmarks/e2e_gpu.py            # toy shapes on the CPU: checks the script
    python benchmarks/e2e_gpu.py --record           # re-record the commit traces (testbed)
    python benchmarks/e2e_gpu.py --quantize int8    # block layers weight-only int8 (or int4)
    python benchmarks/e2e_gpu.py --quantize int8 --compile  # torch.compile fuses int8's dequant

Random weights commit nothing meaningful, so each rule's commits are replayed: how many
tokens each step of each block committed when the bundled testbed decoded real prompts with
that rule (benchmarks/commit_traces.json), 8 recorded blocks spread over the recording laid
over 256 tokens (8 blocks of 32). Every
other part is the real one: the engine's slots and per-row blocks, the cache, the forward
and the commit. For each shape, rule, cache and batch it prints tokens/s, steps, ms per
step and the fraction of the bandwidth floor reached (weight bytes read once per forward,
at the measured copy bandwidth, over the measured time). --quantize makes the block layers
weight-only int8 or int4 as stdec.load(quantize=...) does; the floor then counts the bytes
the quantized weights store. --compile runs the forward through torch.compile as
stdec.load(compile=True) does (torchao's int8 weight-only converts each weight to bf16
before its matmul unless compiled); the warm-up decode pays for the compiles.
"""

import argparse
import itertools
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from stdec.api import compile_model
from stdec.decoding import policies, registry
from stdec.decoding.config import DecodeConfig
from stdec.decoding.engine import Engine
from stdec.models import quant

TRACES = Path(__file__).with_name("commit_traces.json")
RULES = ("threshold", "stdec")
BLOCK, GEN, PROMPT = 32, 256, 512


def record(n: int = 24) -> dict:
    """Commit counts per step of each block, from testbed decodes of gsm, code and lists test
    prompts (dual cache, the testbed's defaults, EOS stop off so every block is decoded)."""
    import stdec
    from stdec.tasks import get_task
    from stdec.tasks.base import format_prompt

    model, tok = stdec.load("testbed", device="cpu")
    prompts = [format_prompt(p) for name in ("gsm", "code", "lists")
               for p in get_task(name).problems("test")[: n // 3]]
    out = {"source": f"stdec.generate on the bundled testbed, {len(prompts)} test prompts "
                     "(gsm, code, lists), dual cache, block 32, gen_length 128, EOS stop off"}
    for rule in RULES:
        gen = stdec.generate(model, tok, prompts, chat=True, policy=rule, cache="dual",
                             gen_length=128, block_length=BLOCK, stop_at_eos=False, trace=True)
        blocks = []
        for steps in gen.trace.step.tolist():
            for b in range(0, len(steps), BLOCK):
                counts: dict[int, int] = {}
                for s in steps[b : b + BLOCK]:
                    counts[s] = counts.get(s, 0) + 1
                blocks.append([counts[s] for s in sorted(counts)])
        out[rule] = blocks
    return out


def replay_rule(schedule: list[list[int]], prompt_len: int):
    """A rule that commits, at step s of block b, the schedule[b][s] most confident masks."""
    width = max(map(len, schedule))
    table = torch.tensor([counts + [BLOCK] * (width - len(counts)) for counts in schedule])

    def rule(conf, pred, state, cfg):
        dev = conf.device
        block = (torch.as_tensor(state.block_start, device=dev) - prompt_len) // BLOCK
        step = torch.as_tensor(state.step, device=dev).clamp(max=width - 1)
        k = table.to(dev)[block.reshape(-1), step.reshape(-1)].reshape(-1, 1)
        return (policies._rank(conf, state.masked) < k) & state.masked

    return rule


def bandwidth(device) -> float:
    nbytes = 1 << 30 if device.type == "cuda" else 1 << 26
    src = torch.empty(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    times = []
    for _ in range(8):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * nbytes / statistics.median(times[2:])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(shape: str, device, dtype, small: bool, quantize: str | None = None):
    from stdec.models.dream import DreamConfig, DreamModel
    from stdec.models.llada import LLaDAConfig, LLaDAModelLM

    if shape == "llada-8b":
        cfg = LLaDAConfig(d_model=128, n_layers=2, n_heads=4, mlp_hidden_size=256,
                          vocab_size=512, mask_token_id=511, eos_token_id=0,
                          pad_token_id=0) if small else LLaDAConfig()
        cls = LLaDAModelLM
    else:
        cfg = DreamConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=256, vocab_size=512,
                          mask_token_id=511, pad_token_id=0, eos_token_id=0,
                          bos_token_id=0) if small else DreamConfig()
        cls = DreamModel
    with torch.device(device):
        model = cls(cfg).to(dtype)
    for p in model.parameters():  # small random weights: finite logits in bf16
        torch.nn.init.normal_(p, std=0.02)
    model.eval().fuse()
    if quantize:  # after fusing, as stdec.load does
        quant.check(model, quantize, device, dtype)
        quant.quantize(model, quantize)
    return model


def run(model, rule: str, cache: str, batch: int, prompt_len: int,
        graphs: bool = True) -> tuple[float, int]:
    """Seconds and engine steps for `batch` random prompts decoded together; `graphs`: dual
    steps at fixed shapes (decoding/graphs.py), captured on CUDA, eager on the CPU."""
    cfg = DecodeConfig(policy=rule, cache=cache, gen_length=GEN, block_length=BLOCK,
                       stop_at_eos=False)
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.mask_token_id  # ids below the mask id
    prompts = [torch.randint(0, vocab, (prompt_len,), generator=gen).tolist()
               for _ in range(batch)]
    model.configure(cuda_graphs=graphs)
    engine = Engine(model, max_batch=batch, max_length=prompt_len + GEN, static_step=graphs)
    sync(model.device)
    t0 = time.perf_counter()
    for p in prompts:
        engine.submit(p, cfg)
    steps = 0
    while engine.step():
        steps += 1
    sync(model.device)
    wall = time.perf_counter() - t0
    return wall, steps


@torch.inference_mode()
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", action="store_true", help="re-record commit_traces.json")
    ap.add_argument("--shapes", default="llada-8b,dream-7b")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--cache", default="dual,prefix")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--graphs", default="on,off",
                    help="on: dual steps replayed as CUDA graphs (fixed shapes, eager on the "
                    "CPU); off: the plain eager step")
    ap.add_argument("--quantize", choices=["int8", "int4"], default=None,
                    help="weight-only quantization of the block layers (default: none)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward")
    args = ap.parse_args()
    if args.record:
        TRACES.write_text(json.dumps(record()) + "\n")
        print(f"wrote {TRACES}")
        return
    small = bool(os.environ.get("SMALL"))
    device = torch.device("cuda" if torch.cuda.is_available() and not small else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    prompt_len = 64 if small else PROMPT
    traces = json.loads(TRACES.read_text())
    bw = bandwidth(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    weights = f"{dtype}, block layers {args.quantize}" if args.quantize else str(dtype)
    weights += ", compiled" if args.compile else ""
    print(f"# {name}, torch {torch.__version__}, {weights}; copy bandwidth {bw / 1e9:.0f} GB/s; "
          f"prompt {prompt_len}, gen {GEN}, block {BLOCK}; medians of {args.repeats}")
    print(f"# commit traces: {traces['source']}")
    print(f"{'shape':<9} {'rule':<9} {'cache':<6} {'graphs':<6} {'batch':>5} {'TPF':>5} "
          f"{'steps':>5} {'ms/step':>8} {'tok/s':>8} {'floor %':>7}")
    for shape in args.shapes.split(","):
        model = build(shape, device, dtype, small, args.quantize)
        if args.compile:
            compile_model(model)
        weight_bytes = quant.weight_bytes(model)  # a quantized weight: the bytes it stores
        for rule in RULES:
            blocks = traces[rule]
            n = GEN // BLOCK  # blocks spread over the recording: every task contributes
            schedule = [blocks[i * len(blocks) // n] for i in range(n)]
            original = registry.get(rule)
            registry.RULES[rule] = replace(original, function=replay_rule(schedule, prompt_len))
            try:
                for cache, batch, graphs in itertools.product(
                        args.cache.split(","), args.batch, args.graphs.split(",")):
                    on = graphs == "on"
                    run(model, rule, cache, batch, prompt_len, on)  # warm-up (and capture)
                    walls, steps = [], 0
                    for _ in range(args.repeats):
                        wall, steps = run(model, rule, cache, batch, prompt_len, on)
                        walls.append(wall)
                    wall = statistics.median(walls)
                    floor = steps * weight_bytes / bw  # every step reads the weights once
                    print(f"{shape:<9} {rule:<9} {cache:<6} {graphs:<6} {batch:>5} "
                          f"{GEN / steps:>5.2f} {steps:>5} {1e3 * wall / steps:>8.2f} "
                          f"{batch * GEN / wall:>8.1f} {100 * floor / wall:>7.1f}", flush=True)
            finally:
                registry.RULES[rule] = original
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
