"""Decode speed of two git revisions side by side, on the same problems and rules.

Each revision runs in a worktree of its own (made under /tmp, reused), in a fresh process
per pass. Passes alternate between the revisions and swap their order each time, so that
machine noise hits both alike; each pass discards a warm-up decode. It prints, per rule,
accuracy, mean NFE and TPF (which must agree: the decode is greedy) and the median
tokens/s of each revision with their ratio.

    python benchmarks/compare_revisions.py b73654f HEAD --task lists --limit 40

`--rules every` adds every rule at its code defaults, and --task and --cache take lists, so
that one run shows a change keeps every rule's outputs under every cache (one pass is
enough for that: the decode is greedy):

    python benchmarks/compare_revisions.py OLD NEW --task gsm,code,lists --limit 32 \
        --cache none,prefix,dual,dkv --rules every --passes 1
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RULES = {  # label -> DecodeConfig options, spelled out so that no revision's defaults matter
    "fixed:k=1": {"policy": "fixed"},
    "threshold:tau=0.9": {"policy": "threshold", "tau": 0.9},
    "stdec": {"policy": "stdec", "tau_high": 0.99, "tau_low": 0.95, "sigma": 2.0,
              "rho": 0.97, "window": 2},
}
# the rules every revision knows, at their code defaults (--rules every)
EVERY = ("fixed", "threshold", "factor", "localleap", "stdec", "eb", "klass", "wino", "credit")
WORKER = r"""
import json, sys
from stdec.api import load
from stdec.decoding.config import DecodeConfig
from stdec.tasks import evaluate
model_path, tasks, limit, gen, batch, caches, rules, warm = sys.argv[1:9]
model, tokenizer = load(model_path)
out = {}
for task in tasks.split(","):
    for cache in caches.split(","):
        for label, opts in json.loads(rules).items():
            cfg = DecodeConfig(gen_length=int(gen), block_length=32, cache=cache, **opts)
            if warm == "1":  # a warm-up decode, for the timed passes
                evaluate(model, tokenizer, task, "test", cfg, limit=4, batch_size=int(batch))
            r = evaluate(model, tokenizer, task, "test", cfg, limit=int(limit),
                         batch_size=int(batch))
            out[f"{task} {cache} {label}"] = {"accuracy": r.accuracy, "nfe": r.mean_nfe,
                                              "tpf": r.mean_tpf, "tokens_per_s": r.tokens_per_s}
print(json.dumps(out))
"""


def worktree(rev: str) -> tuple[str, Path]:
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    path = Path(f"/tmp/stdec-rev-{sha}")
    if not path.is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), sha],
                       check=True, capture_output=True)
    return sha, path


def run(tree: Path, args, rules: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    model = str(ROOT / "src" / "stdec" / "assets" / "testbed")  # one model for both
    cmd = [sys.executable, "-c", WORKER, model, args.task, str(args.limit), str(args.gen_length),
           str(args.batch_size), args.cache, json.dumps(rules),
           "1" if args.passes > 1 else "0"]  # one pass compares outputs: no warm-up
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{tree}: the decode failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--task", default="lists", help="a testbed task, or several: gsm,code")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--gen-length", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cache", default="dual", help="a cache mode, or several: none,dual")
    ap.add_argument("--rules", choices=("three", "every"), default="three",
                    help="three: vanilla, threshold 0.9 and a tuned stdec; every: those and "
                    "every rule at its code defaults")
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    rules = dict(RULES)
    if args.rules == "every":
        rules.update({f"{name} (code defaults)": {"policy": name}
                      for name in EVERY if name != "fixed"})
    trees = dict(worktree(rev) for rev in (args.old, args.new))
    results: dict[str, list[dict]] = {sha: [] for sha in trees}
    for p in range(args.passes):
        order = list(trees) if p % 2 == 0 else list(trees)[::-1]
        for sha in order:
            results[sha].append(run(trees[sha], args, rules))
            print(f"pass {p + 1}: {sha} done", file=sys.stderr)
    old, new = list(trees)
    print(f"{args.task}, first {args.limit} test problems, gen_length {args.gen_length}, cache "
          f"{args.cache}, batch {args.batch_size}; medians of {args.passes} interleaved passes")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"| task cache rule | acc old/new | NFE old/new | TPF old/new | identical | "
          f"tok/s {old} | tok/s {new} | new/old |")
    print("|---|---|---|---|---|---|---|---|")
    differ = 0
    for label in results[old][0]:
        a, b = results[old][0][label], results[new][0][label]
        same = all(a[k] == b[k] for k in ("accuracy", "nfe", "tpf"))
        differ += not same
        speed = {sha: statistics.median(r[label]["tokens_per_s"] for r in results[sha])
                 for sha in trees}
        print(f"| {label} | {100 * a['accuracy']:.1f}/{100 * b['accuracy']:.1f} | "
              f"{a['nfe']:.2f}/{b['nfe']:.2f} | {a['tpf']:.2f}/{b['tpf']:.2f} | "
              f"{'yes' if same else 'NO'} | {speed[old]:.1f} | {speed[new]:.1f} | "
              f"{speed[new] / speed[old]:.2f}x |")
    print(f"{len(results[old][0]) - differ} of {len(results[old][0])} identical in accuracy, "
          "NFE and TPF")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
