"""Where a decode's CPU time goes, by kind of forward, at two batch sizes: vanilla
(`fixed:k=1`) against STDec on a testbed task, each in one engine run over the same problems.

    OMP_NUM_THREADS=1 python benchmarks/forward_costs.py --task code --limit 96 --gen-length 288

For each rule and batch size it prints the decode's CPU seconds and tokens per CPU second,
then per kind of forward (full: a refresh, or a step without a cache; dual: a block step over
the cache) the rows it ran and its CPU seconds; "rest" is the commit and the scheduler. CPU
seconds of this process, not wall time, so that other jobs on the machine disturb it little
at one thread. The first run (STDec at the smaller batch) is a discarded warm-up.
"""

import argparse
import time
from collections import Counter

import torch

from stdec.api import encode, end_token_ids, load, model_defaults
from stdec.decoding.config import build
from stdec.decoding.engine import Engine
from stdec.tasks import get_task
from stdec.tasks.base import format_prompt

RULES = {"vanilla": {"policy": "fixed", "k": 1}, "stdec": {"policy": "stdec"}}


def run(model, prompts, eos, options: dict, batch: int) -> tuple[float, int, Counter, Counter]:
    """(CPU seconds, tokens, rows by kind, CPU seconds by kind) of one engine run."""
    cfg = build(options, model_defaults(model))
    engine = Engine(model, max_batch=batch, max_length=max(map(len, prompts)) + cfg.gen_length,
                    eos_ids=eos)
    rows, seconds = Counter(), Counter()
    forward = engine.runner.forward

    def timed(kind, batch_rows):
        start = time.process_time()
        out = forward(kind, batch_rows)
        seconds[kind] += time.process_time() - start
        rows[kind] += len(batch_rows)
        return out

    engine.runner.forward = timed
    requests = [engine.submit(p, cfg) for p in prompts]
    start = time.process_time()
    engine.run()
    cpu = time.process_time() - start
    return cpu, sum(r.stats.gen_tokens for r in requests), rows, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="code", help="a testbed task: gsm, code or lists")
    ap.add_argument("--limit", type=int, default=96, help="the first N test problems")
    ap.add_argument("--gen-length", type=int, default=288)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--cache", default="dual")
    ap.add_argument("--batches", default="1,24", help="two batch sizes, comma-separated")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    model, tokenizer = load("testbed", device="cpu")
    problems = get_task(args.task).problems("test")[: args.limit]
    prompts = encode(tokenizer, [format_prompt(p) for p in problems], chat=True)
    eos = end_token_ids(tokenizer)
    shared = {"gen_length": args.gen_length, "block_length": args.block_length,
              "cache": args.cache}
    print(f"{args.task}, {len(prompts)} test problems, gen_length {args.gen_length}, "
          f"cache {args.cache}; {torch.get_num_threads()} threads, torch {torch.__version__}")
    run(model, prompts, eos, {**RULES["stdec"], **shared}, batches[0])  # warm-up
    per_cpu = {}
    for batch in batches:
        for name, rule in RULES.items():
            cpu, tokens, rows, seconds = run(model, prompts, eos, {**rule, **shared}, batch)
            per_cpu[batch, name] = tokens / cpu
            kinds = "  ".join(f"{k} {rows[k]} rows {seconds[k]:.2f} s "
                              f"({1000 * seconds[k] / rows[k]:.1f} ms a row)" for k in rows)
            print(f"{name:8s} batch {batch:3d}: {cpu:6.2f} CPU s, {tokens / cpu:6.1f} tok/CPU s;"
                  f"  {kinds}  rest {cpu - sum(seconds.values()):.2f} s")
    for batch in batches:
        print(f"batch {batch}: STDec / vanilla tokens per CPU s "
              f"{per_cpu[batch, 'stdec'] / per_cpu[batch, 'vanilla']:.2f}x")


if __name__ == "__main__":
    main()
