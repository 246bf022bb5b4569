"""Weight-only int8 and int4 (stdec.load(quantize=...), models/quant.py) against the float
model: weight memory and logit drift at LLaDA-8B shape, and CPU speed on the bundled testbed
and on one LLaDA-8B-shaped layer, each mode timed in the same interleaved passes.

    python benchmarks/quantize.py                    # everything (~15 minutes on 2 CPU cores)
    python benchmarks/quantize.py --parts memory     # memory and drift at 8B shape alone
    SMALL=1 python benchmarks/quantize.py            # toy shapes: checks the script in seconds

memory   LLaDA-8B's shape with random weights, built one block at a time so that it fits in
         24 GiB of RAM: each block is made in --dtype (bfloat16), fused as stdec.load fuses it,
         then copied and quantized per mode with stdec's own quant.quantize_layer. Bytes count
         what each weight stores (packed values, scales, zero points). Reported per part
         (embedding, blocks, output head), the whole model resident, and what one dual-cache
         block step reads: every block and the head, not the embedding table (it reads only
         the block's 32 rows of it). "+ head": the output head quantized too (quantize_head);
         "+ head + emb": the input embedding table too (quantize_embeddings, a
         QuantizedEmbedding: the same bytes a step reads, less resident).
drift    in the same pass, one 32-token sequence runs through the float blocks and, apart,
         through each mode's, then the head: max |logit - float logit| / max |float logit|,
         top-1 agreement with the float model and KL(float || mode) per position, for the
         whole quantized stack. Random weights (PyTorch's default init) are a proxy: the
         testbed's drift, below, is a trained model's.
testbed  the bundled testbed (float32 on the CPU, its decoding defaults, dual cache), the
         first 16 test problems of gsm, code and lists decoded as one batch per pass, modes
         interleaved (rotated each pass), --repeats passes after one discarded warm-up pass:
         median tokens/s, the ratio to float, NFE and TPF; and the logit drift of one full
         forward over those prompts.
layer    one LLaDA-8B block in --dtype, fused: a dual-cache block step (batch 1, a 32-token
         block over 512 cached positions), each mode in the same interleaved passes, median
         ms and the ratio to float; tokens/s is the block's 32 tokens over that time (one
         layer of 32, so a whole model is about 32 times slower). With --compile every
         mode's block runs through torch.compile (compiled in the warm-up passes).
"""

import argparse
import copy
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from stdec.models import quant
from stdec.models.layers import FusedLinear, RMSNorm
from stdec.models.llada import LLaDABlock, LLaDAConfig, LLaDAModelLM
from stdec.util import cpuinfo, versions

MODES = ("int8", "int4")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def shape(small: bool) -> LLaDAConfig:
    if small:
        return LLaDAConfig(d_model=256, n_layers=4, n_heads=4, mlp_hidden_size=768,
                           vocab_size=2048, mask_token_id=2047, eos_token_id=0, pad_token_id=0)
    return LLaDAConfig()  # LLaDA-8B


def random_block(cfg: LLaDAConfig, dtype: torch.dtype, seed: int) -> LLaDABlock:
    torch.manual_seed(seed)
    return LLaDABlock(cfg).to(dtype).eval()


def quantized(block: nn.Module, mode: str) -> nn.Module:
    """A copy of `block` with every linear layer quantized (as quant.targets picks them)."""
    out = copy.deepcopy(block)
    for m in list(out.modules()):
        if isinstance(m, nn.Linear | FusedLinear):
            quant.quantize_layer(m, mode)
    return out


def rope(cfg: LLaDAConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (B, 1, L, D) as LLaDA computes them (from a weightless skeleton)."""
    with torch.device("meta"):
        skeleton = LLaDAModelLM(LLaDAConfig(**{**cfg.__dict__, "n_layers": 0}))
    return skeleton._rope(positions)


def drift(ref: torch.Tensor, out: torch.Tensor) -> dict:
    """(L, V) logits against the float model's."""
    ref, out = ref.float(), out.float()
    kl = F.kl_div(out.log_softmax(-1), ref.log_softmax(-1), log_target=True,
                  reduction="none").sum(-1)
    return {"max_rel": ((out - ref).abs().max() / ref.abs().max()).item(),
            "top1": (out.argmax(-1) == ref.argmax(-1)).float().mean().item(),
            "kl": kl.mean().item()}


@torch.inference_mode()
def memory_and_drift(cfg: LLaDAConfig, dtype: torch.dtype, tokens: int = 32):
    gb = 1e9
    torch.manual_seed(0)
    emb = (torch.randn(cfg.embedding_size, cfg.d_model) * 0.02).to(dtype)
    ids = torch.randint(0, cfg.vocab_size, (1, tokens))
    cos, sin = rope(cfg, torch.arange(tokens)[None])
    qemb = {m: quant.QuantizedEmbedding(emb, m) for m in MODES}
    streams = {m: emb[ids] for m in ("float", *MODES)}
    streams.update({f"{m} + emb": qemb[m](ids) for m in MODES})  # the same blocks, apart
    blocks = dict.fromkeys(("float", *MODES), 0)
    t0 = time.perf_counter()
    for i in range(cfg.n_layers):
        block = random_block(cfg, dtype, seed=1 + i)
        block.fuse()
        blocks["float"] += quant.weight_bytes(block)
        streams["float"] = block(streams["float"], cos, sin, None, None, 0, 0, False)
        for mode in MODES:
            q = quantized(block, mode)
            blocks[mode] += quant.weight_bytes(q)
            for name in (mode, f"{mode} + emb"):
                streams[name] = q(streams[name], cos, sin, None, None, 0, 0, False)
            del q
        del block
        print(f"  block {i + 1}/{cfg.n_layers} built, quantized and run "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    torch.manual_seed(10_000)
    head = nn.Linear(cfg.d_model, cfg.embedding_size, bias=False).to(dtype)
    norm = RMSNorm(cfg.d_model, cfg.rms_norm_eps).to(dtype)
    ref = F.linear(norm(streams["float"]), head.weight)[0]
    emb_bytes, head_bytes = quant.tensor_bytes(emb), quant.tensor_bytes(head.weight)
    float_total = emb_bytes + blocks["float"] + head_bytes + quant.weight_bytes(norm)
    print(f"\nweights at LLaDA-8B shape ({cfg.n_layers} blocks, d={cfg.d_model}, vocab "
          f"{cfg.embedding_size}), {str(dtype).removeprefix('torch.')} float model; GB = 1e9 "
          "bytes")
    print(f"{'mode':<17} {'embedding':>9} {'blocks':>8} {'head':>7} {'resident':>9} "
          f"{'% float':>7} {'step reads':>10} {'% float':>7} {'max rel':>8} {'top-1':>6} "
          f"{'KL':>8}")
    float_read = blocks["float"] + head_bytes

    def row(name, blk, hd, d, em=emb_bytes):
        resident = em + blk + hd + quant.weight_bytes(norm)
        read = blk + hd
        cols = (f"{d['max_rel']:>8.4f} {100 * d['top1']:>5.1f}% {d['kl']:>8.5f}" if d else
                f"{'-':>8} {'-':>6} {'-':>8}")
        print(f"{name:<17} {em / gb:>9.3f} {blk / gb:>8.3f} {hd / gb:>7.3f} "
              f"{resident / gb:>9.3f} {100 * resident / float_total:>6.1f}% {read / gb:>10.3f} "
              f"{100 * read / float_read:>6.1f}% {cols}")

    row("float", blocks["float"], head_bytes, None)
    for mode in MODES:
        h = norm(streams[mode])
        row(mode, blocks[mode], head_bytes, drift(ref, F.linear(h, head.weight)[0]))
        qhead = quant.quantize_layer(copy.deepcopy(head), mode)
        row(f"{mode} + head", blocks[mode], quant.weight_bytes(qhead), drift(ref, qhead(h)[0]))
        h = norm(streams[f"{mode} + emb"])
        row(f"{mode} + head + emb", blocks[mode], quant.weight_bytes(qhead),
            drift(ref, qhead(h)[0]), quant.weight_bytes(qemb[mode]))


@torch.inference_mode()
def testbed_speed(repeats: int, n: int):
    import stdec
    from stdec.tasks import get_task
    from stdec.tasks.base import format_prompt

    prompts = [format_prompt(p) for name in ("gsm", "code", "lists")
               for p in get_task(name).problems("test")[: math.ceil(n / 3)]][:n]
    loaded = {m: stdec.load("testbed", device="cpu", quantize=None if m == "float" else m)
              for m in ("float", *MODES)}
    options = dict(chat=True, cache="dual")
    walls: dict[str, list[float]] = {m: [] for m in loaded}
    stats = {}
    order = list(loaded)
    for p in range(repeats + 1):
        for m in order[p % len(order):] + order[: p % len(order)]:
            model, tok = loaded[m]
            t0 = time.perf_counter()
            out = stdec.generate(model, tok, prompts, **options)
            wall = time.perf_counter() - t0
            if p:  # pass 0 warms every mode up and is discarded
                walls[m].append(wall)
            stats[m] = out.stats
    tok = loaded["float"][1]
    chat = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                    add_generation_prompt=True) for q in prompts[:4]]
    ids = tok(chat, add_special_tokens=False, padding=True, return_tensors="pt")["input_ids"]
    model = loaded["float"][0]
    ids = torch.cat([ids, torch.full((len(ids), 32), model.config.mask_token_id)], dim=1)
    ref = model(ids).flatten(0, 1)
    print(f"\ntestbed ({str(model.dtype).removeprefix('torch.')} on the CPU, its decoding "
          f"defaults, dual cache): {len(prompts)} test prompts as one batch, median of "
          f"{repeats} interleaved passes after a discarded one")
    print(f"{'mode':<6} {'tok/s':>8} {'x float':>8} {'spread':>7} {'NFE':>7} {'TPF':>6} "
          f"{'max rel':>8} {'top-1':>6} {'KL':>8}")
    base = None
    for m, (model, _) in loaded.items():
        gen = sum(s.gen_tokens for s in stats[m])
        nfe = sum(s.nfe for s in stats[m])
        med = statistics.median(walls[m])
        tps = gen / med
        base = base or tps
        d = drift(ref, model(ids).flatten(0, 1)) if m != "float" else None
        cols = (f"{d['max_rel']:>8.4f} {100 * d['top1']:>5.1f}% {d['kl']:>8.5f}" if d else
                f"{'-':>8} {'-':>6} {'-':>8}")
        print(f"{m:<6} {tps:>8.1f} {tps / base:>7.2f}x "
              f"{100 * (max(walls[m]) - min(walls[m])) / med:>6.0f}% {nfe / len(prompts):>7.1f} "
              f"{gen / nfe:>6.2f} {cols}")


@torch.inference_mode()
def layer_speed(cfg: LLaDAConfig, dtype: torch.dtype, repeats: int, compile: bool = False,
                seq: int = 512, block_len: int = 32):
    from stdec.models.cache import KVCache

    block = random_block(cfg, dtype, seed=1)
    block.fuse()
    variants = {"float": block, **{m: quantized(block, m) for m in MODES}}
    torch.manual_seed(0)
    h = torch.randn(1, seq, cfg.d_model).to(dtype)
    cos, sin = rope(cfg, torch.arange(seq)[None])
    s = seq // 2  # a block mid-sequence
    caches = {}
    for m, b in variants.items():  # the refresh: every position's K/V
        caches[m] = KVCache(1, 1, cfg.n_kv_heads, seq, cfg.head_dim, dtype=dtype, device="cpu")
        b(h, cos, sin, None, caches[m], 0, 0, False)
    x, c, sn = h[:, s:s + block_len], cos[:, :, s:s + block_len], sin[:, :, s:s + block_len]
    run = {m: torch.compile(b) if compile else b for m, b in variants.items()}

    def step(m):
        run[m](x, c, sn, None, caches[m], 0, s, False)

    times: dict[str, list[float]] = {m: [] for m in variants}
    order = list(variants)
    for p in range(repeats + 2):
        for m in order[p % len(order):] + order[: p % len(order)]:
            t0 = time.perf_counter()
            step(m)
            if p >= 2:  # two warm-up passes discarded
                times[m].append(time.perf_counter() - t0)
    how = "fused, compiled" if compile else "fused"
    print(f"\none LLaDA-8B block ({str(dtype).removeprefix('torch.')}, {how}): a dual-cache "
          f"block step, batch 1, {block_len} tokens over {seq} cached positions; median of "
          f"{repeats} interleaved passes")
    print(f"{'mode':<6} {'ms':>9} {'x float':>8} {'spread':>7} {'tok/s (1 layer)':>15} "
          f"{'weight GB':>9}")
    base = statistics.median(times["float"])
    for m, b in variants.items():
        med = statistics.median(times[m])
        print(f"{m:<6} {1e3 * med:>9.2f} {base / med:>7.2f}x "
              f"{100 * (max(times[m]) - min(times[m])) / med:>6.0f}% {block_len / med:>15.1f} "
              f"{quant.weight_bytes(b) / 1e9:>9.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="memory,testbed,layer",
                    help="which parts to run, of memory, testbed, layer (default: all)")
    ap.add_argument("--dtype", default="bfloat16", choices=DTYPES,
                    help="the float model's dtype at 8B shape (default: bfloat16)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes (default: 5)")
    ap.add_argument("--prompts", type=int, default=16, help="testbed prompts (default: 16)")
    ap.add_argument("--compile", action="store_true",
                    help="layer: torch.compile every mode's block (default: eager)")
    args = ap.parse_args()
    small = bool(os.environ.get("SMALL"))
    cfg, dtype = shape(small), DTYPES[args.dtype]
    parts = [p.strip() for p in args.parts.split(",")]
    unknown = set(parts) - {"memory", "testbed", "layer"}
    if unknown:
        ap.error(f"unknown part {sorted(unknown)[0]!r}; choose among memory, testbed, layer")
    with torch.device("meta"):  # torchao and the CPU int4 kernel: refused in one sentence
        quant.check(LLaDAModelLM(shape(True)), "int4", torch.device("cpu"), dtype)
    print(f"# {cpuinfo('model name') or 'CPU'}, {torch.get_num_threads()} threads; "
          f"{versions()}")
    if "memory" in parts:
        memory_and_drift(cfg, dtype)
    if "testbed" in parts:
        testbed_speed(2 if small else args.repeats, 6 if small else args.prompts)
    if "layer" in parts:
        layer_speed(cfg, dtype, 2 if small else args.repeats, args.compile)


if __name__ == "__main__":
    main()
