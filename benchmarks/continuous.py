"""Continuous admission against static batches, in process (no HTTP): the serve-load
benchmark's requests (gsm, code and lists prompts over six rule/cache settings, made by
benchmarks/serve_load.py) decoded two ways by the same engine:

  continuous  one engine run of --max-batch slots; a finished request's slot takes the next
              request at the next step (what stdec.generate, bench, tune and lm-eval do)
  static      chunks of --max-batch requests in arrival order, each chunk one engine run,
              the next chunk starting when the previous one has finished

Passes alternate (static then continuous, then continuous then static, ...) so that the
machine's noise hits both alike; the warm-up is discarded; every answer must be identical
in both ways. Prints each pass, then the medians and their ratio: tokens/s over wall time
and over the process's CPU time (which other jobs on a shared machine disturb less), engine
steps, forwards, and the work fed to the model (positions fed, and query-key pairs of
attention, padding included), which does not depend on the machine.

    python benchmarks/continuous.py                       # 64 requests, max-batch 16, 5 passes
    python benchmarks/continuous.py --requests 16 --max-batch 4 --passes 3
"""

import argparse
import platform
import statistics
import time
from collections import Counter

import torch
from serve_load import CHECKPOINT, config, requests

from stdec.api import encode, end_token_ids, load, model_defaults
from stdec.decoding.engine import Engine

WORK = Counter()  # positions fed and attention pairs, padding included


def count_work(model):
    forward = model.forward

    def counted(ids, **kw):
        n, width = ids.shape
        cache = kw.get("cache")
        WORK["fed"] += n * width
        WORK["pairs"] += n * width * (cache.keys if cache is not None else width)
        return forward(ids, **kw)

    model.forward = counted


def run(model, eos: list[int], jobs: list, max_batch: int, chunk: int) -> dict:
    """Decode `jobs` ((ids, config) pairs) in runs of `chunk` requests, each run one engine of
    `max_batch` slots sized to its longest row: seconds, tokens, steps, forwards, answers."""
    ids, tokens, steps, forwards = [], 0, 0, Counter()
    WORK.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(jobs), chunk):
        part = jobs[i : i + chunk]
        engine = Engine(model, max_batch=min(max_batch, len(part)), eos_ids=eos,
                        max_length=max(len(p) + c.gen_length for p, c in part))
        forward = engine.runner.forward

        def counted(kind, rows, forward=forward):
            forwards[kind] += 1
            return forward(kind, rows)

        engine.runner.forward = counted
        submitted = [engine.submit(p, c) for p, c in part]
        engine.run()
        assert all(r.state == "done" for r in submitted), [r.error for r in submitted]
        ids += [r.ids for r in submitted]
        tokens += engine.counters["gen_tokens"]
        steps += engine.counters["steps"]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": wall, "tok_s": tokens / wall, "cpu": cpu, "tok_cpu_s": tokens / cpu,
            "steps": steps, "forwards": sum(forwards.values()), "by_kind": dict(forwards),
            "fed": WORK["fed"], "pairs": WORK["pairs"], "ids": ids}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load("testbed", device="cpu")
    CHECKPOINT.update(model_defaults(model))
    count_work(model)
    work = requests(args.requests)
    prompts = encode(tokenizer, [p for p, _, _ in work], chat=True)
    jobs = [(p, config(m, o)) for p, (_, m, o) in zip(prompts, work, strict=True)]
    eos = end_token_ids(tokenizer)
    print(f"# {len(jobs)} requests (serve_load.py's), max-batch {args.max_batch}; testbed on "
          f"{platform.processor() or 'cpu'}, {args.threads} threads, torch {torch.__version__}, "
          f"python {platform.python_version()}")
    ways = {"static": args.max_batch, "continuous": len(jobs)}  # requests per engine run
    run(model, eos, jobs[: args.max_batch], args.max_batch, args.max_batch)  # warm-up
    results: dict[str, list[dict]] = {way: [] for way in ways}
    for p in range(args.passes):
        order = list(ways) if p % 2 == 0 else list(ways)[::-1]
        for way in order:
            r = run(model, eos, jobs, args.max_batch, ways[way])
            results[way].append(r)
            print(f"pass {p + 1} {way:<10} {r['tok_s']:6.1f} tok/s {r['wall']:6.2f} s "
                  f"{r['tok_cpu_s']:6.1f} tok/cpu-s {r['steps']:4d} steps {r['forwards']:4d} "
                  f"forwards {r['by_kind']} fed {r['fed']} pairs {r['pairs']}", flush=True)
    reference = results["static"][0]["ids"]
    same = all(r["ids"] == reference for rs in results.values() for r in rs)
    keys = ("tok_s", "wall", "tok_cpu_s", "cpu", "steps", "forwards", "fed", "pairs")
    med = {way: {k: statistics.median(r[k] for r in rs) for k in keys}
           for way, rs in results.items()}
    for way, m in med.items():
        print(f"median {way:<10} {m['tok_s']:6.1f} tok/s {m['wall']:6.2f} s "
              f"{m['tok_cpu_s']:6.1f} tok/cpu-s {m['cpu']:6.2f} cpu-s {m['steps']:5.0f} steps "
              f"{m['forwards']:4.0f} forwards {m['fed']:8.0f} fed {m['pairs']:11.0f} pairs")
    for k, label in (("tok_s", "tokens/s"), ("tok_cpu_s", "tokens/cpu-s")):
        per_pass = [c[k] / s[k] for c, s in zip(results["continuous"], results["static"],
                                                 strict=True)]
        print(f"continuous / static {label}: {med['continuous'][k] / med['static'][k]:.2f}x "
              f"(per pass: median {statistics.median(per_pass):.2f}x, {min(per_pass):.2f} "
              f"to {max(per_pass):.2f})")
    c, s = med["continuous"], med["static"]
    print(f"continuous / static work: {c['fed'] / s['fed']:.2f}x positions fed, "
          f"{c['pairs'] / s['pairs']:.2f}x attention pairs, {c['forwards'] / s['forwards']:.2f}x "
          f"forwards; answers identical: {same}")
    if not same:
        raise SystemExit("the two ways decoded different answers")


if __name__ == "__main__":
    main()
