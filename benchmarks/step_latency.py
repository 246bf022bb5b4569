"""Per-step latency of the three cache modes, and what bounds it.

    python benchmarks/step_latency.py                 # random 4-layer d=256 model
    python benchmarks/step_latency.py --random-8b     # LLaDA-8B shape (needs a GPU)
    python benchmarks/step_latency.py --model PATH    # a local checkpoint
    python benchmarks/step_latency.py --random-llada-v  # LLaDA-V shape, image prefix (a GPU)
    python benchmarks/step_latency.py --random-8b --quantize int4  # weight-only int8 / int4

For batch 1 and 8 (and 32 at 8B shape) over a 512-token sequence with 32-token blocks it
times one step of `none` (a full forward), `prefix` (block + suffix over a cached prefix),
`dual` (the block alone) and `graph` (the engine's fixed-shape dual step, decoding/graphs.py:
replayed as a CUDA graph on CUDA, run eagerly elsewhere; inputs filled and logits read
included), plus the loop's own work after the forward (confidence, policy, commit), and
prints medians beside the weight bytes, the measured copy bandwidth and the roofline
(weight bytes / bandwidth: the time to read every weight once) and the fraction of it each
graph step reaches. --no-cuda-graphs times the fixed-shape step eagerly on CUDA too.

With --random-llada-v (SigLIP so400m, the projector and LLaDA-8B, random weights) it first
times one 384x384 image's encoding (preprocessing, tower, projector, layout: 1485 vectors),
then the steps of the first block after a prompt of that image and 32 text tokens, 256 to
generate: what each cache mode costs with an image prefix (the image's vectors are prompt
positions like any other to the language model).

With --quantize the language model's block layers are weight-only int8 or int4 as
stdec.load(quantize=...) makes them (models/quant.py); the weight bytes, and so the
roofline, are what the quantized weights store.
"""

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from PIL import Image

from stdec.decoding.config import DecodeConfig
from stdec.decoding.engine import confidence, eos_stop
from stdec.decoding.graphs import StaticBlockStep
from stdec.decoding.policies import StepState, select
from stdec.models import load_model, quant, resolve_device, resolve_dtype
from stdec.models.llada import LLaDAConfig, LLaDAModelLM
from stdec.models.llada_v import LLaDAVConfig, LLaDAVModel


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device, warmup: int, iters: int) -> float:
    for _ in range(warmup):  # discarded: allocator, kernel selection, caches
        fn()
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def copy_bandwidth(device, nbytes: int) -> float:
    """Bytes per second of a device-to-device copy (each byte read once and written once)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, warmup=3, iters=10)
    return 2 * nbytes / (ms / 1e3)


def hardware(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads"


def build_model(args, device, dtype) -> LLaDAModelLM:
    if args.model:
        return load_model(args.model, dtype=dtype, device=device)
    if args.random_llada_v:  # LLaDA-V shape; SMALL=1: its tile and grids, toy widths (CPU)
        small = bool(os.environ.get("SMALL"))
        text = LLaDAConfig(d_model=256, n_layers=4, n_heads=4, mlp_hidden_size=768,
                           vocab_size=args.vocab, mask_token_id=args.vocab - 1, eos_token_id=0,
                           pad_token_id=0) if small else LLaDAConfig()
        tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4) if small else {}
        with torch.device(device):
            vl = LLaDAVModel(LLaDAVConfig(text, tower)).to(dtype)
        return vl.eval()
    if args.random_8b:
        cfg = LLaDAConfig()  # LLaDA-8B shape
    else:
        cfg = LLaDAConfig(d_model=256, n_layers=4, n_heads=4, mlp_hidden_size=768,
                          vocab_size=args.vocab, mask_token_id=args.vocab - 1,
                          eos_token_id=0, pad_token_id=0)
    with torch.device(device):
        model = LLaDAModelLM(cfg).to(dtype)
    return model.eval()


@torch.inference_mode()
def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: a random model)")
    parser.add_argument("--random-8b", action="store_true", help="random LLaDA-8B-shaped model")
    parser.add_argument("--random-llada-v", action="store_true",
                        help="random LLaDA-V-shaped model: image encoding, then steps after an "
                        "image prefix")
    parser.add_argument("--vocab", type=int, default=2048, help="vocab of the small random model")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="batch sizes (default: 1 8, and 32 at 8B shape)")
    parser.add_argument("--no-cuda-graphs", dest="graphs", action="store_false",
                        help="time the fixed-shape dual step eagerly on CUDA as well")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--quantize", choices=["int8", "int4"], default=None,
                        help="weight-only quantization of the language model's block layers")
    args = parser.parse_args()

    args.batch = args.batch or ([1, 8, 32] if args.random_8b and not args.random_llada_v
                                else [1, 8])
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model = build_model(args, device, dtype)
    if args.quantize:  # as stdec.load(quantize=...): checked (one sentence), then rewritten
        quant.check(model, args.quantize, device, dtype)
        quant.quantize(model, args.quantize)
    args.start = None  # the block's first position (default: mid-sequence)
    if args.random_llada_v:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (384, 384, 3),
                                                                  dtype=np.uint8))
        encode_ms = median_ms(lambda: model.image_features(image), device, 2, 5)
        n_image = model.image_token_count(image.size)
        args.start = 32 + n_image
        args.seq = args.start + 256
        print(f"one 384x384 image: {n_image} vectors, encoded in {encode_ms:.1f} ms "
              f"(preprocessing, tower, projector, layout)")
        model = model.language_model  # the steps: the image is prompt positions now
    cfg = model.config
    weight_bytes = quant.weight_bytes(model)  # a quantized weight: the bytes it stores
    bandwidth = copy_bandwidth(device, 1 << 30 if device.type == "cuda" else 1 << 28)
    print(f"device: {hardware(device)}; torch {torch.__version__}; {dtype}"
          f"{f', block layers {args.quantize}' if args.quantize else ''}")
    print(f"model: d={cfg.d_model} layers={cfg.n_layers} vocab={cfg.embedding_size}; "
          f"weights {weight_bytes / 1e9:.3f} GB")
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s -> roofline "
          f"{1e3 * weight_bytes / bandwidth:.2f} ms per forward (weights read once)")
    where = f"the block at {args.start}" if args.start else "a block mid-sequence"
    print(f"sequence {args.seq}, block {args.block}, {where}; medians of {args.iters} after "
          f"{args.warmup} warm-up\n")
    captured = args.graphs and device.type == "cuda"
    print(f"graph: the fixed-shape dual step, {'captured' if captured else 'eager'}\n")
    print(f"{'batch':>5} {'none':>10} {'prefix':>10} {'dual':>10} {'graph':>10} "
          f"{'loop work':>10} {'work/dual':>10} {'graph floor':>11} {'tok/s graph':>11}")
    floor = 1e3 * weight_bytes / bandwidth
    for batch in args.batch:
        none, prefix, dual, graph, work = measure(model, batch, args, captured)
        print(f"{batch:>5} {none:>8.2f}ms {prefix:>8.2f}ms {dual:>8.2f}ms {graph:>8.2f}ms "
              f"{work:>8.2f}ms {100 * work / dual:>9.1f}% {100 * floor / graph:>10.1f}% "
              f"{1e3 * batch * args.block / graph:>11.0f}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def measure(model, batch: int, args, captured: bool) -> tuple[float, ...]:
    """Median ms of a none, prefix, dual and fixed-shape dual step, and of the loop's work
    after a forward."""
    cfg, device = model.config, model.device
    T, bl = args.seq, args.block
    s = args.start or T // 2  # default a block in the middle: prefix feeds half the sequence
    e = s + bl
    x = torch.randint(0, cfg.vocab_size - 1, (batch, T), device=device)
    x[:, s:] = cfg.mask_token_id
    cache = model.new_cache(batch, T)
    model(x, cache=cache, logits_slice=slice(s, e))  # refresh
    padded = model.new_cache(batch, T + 1)  # the fixed-shape step's: + a scratch column
    model(x, cache=padded, logits_slice=slice(s, e))
    static = StaticBlockStep(model, padded, max_batch=batch, max_length=T, capture=captured)
    rows = list(range(batch))

    def timed(fn):
        return median_ms(fn, device, args.warmup, args.iters)

    none = timed(lambda: model(x, logits_slice=slice(s, e)))
    prefix = timed(lambda: model(x[:, s:], cache=cache, cache_start=s, logits_slice=slice(0, bl)))
    dual = timed(lambda: model(x[:, s:e], cache=cache, cache_start=s))
    graph = timed(lambda: static(x, rows, [s] * batch, [T] * batch, bl))
    logits = model(x[:, s:e], cache=cache, cache_start=s)
    eos = torch.tensor([cfg.eos_token_id], device=device)
    stable = torch.ones(batch, bl, dtype=torch.long, device=device)
    policy = DecodeConfig(policy="stdec", gen_length=bl, block_length=bl)

    def loop_work():  # what decode() does after each forward
        conf, pred = confidence(logits, cfg.mask_token_id, 0.0, None)
        masked = x[:, s:e] == cfg.mask_token_id
        commit = select(conf, pred, StepState(masked, x != cfg.mask_token_id, s, stable, 0),
                        policy)
        y = x.clone()
        y[:, s:e] = torch.where(commit, pred, y[:, s:e])
        eos_stop(y[:, s:], eos, cfg.mask_token_id)

    return none, prefix, dual, graph, timed(loop_work)

if __name__ == "__main__":
    main()
