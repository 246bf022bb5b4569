"""Does `--compile` (torch.compile of the forward) pay? Eager and compiled copies of one model
decode the same test problems, interleaved, and the script prints each one's median wall
time, the ratio, the one-off compile time and whether the outputs are identical.

    python experiments/compile_speed.py                            # testbed, gsm and code
    python experiments/compile_speed.py --model PATH --device cuda --tasks gsm --limit 32
"""

import argparse
import math
import statistics
import time

import torch

import stdec
from stdec.api import compile_model
from stdec.tasks import get_task
from stdec.tasks.base import format_prompt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="testbed")
    ap.add_argument("--device", default=None)
    ap.add_argument("--tasks", default="gsm,code")
    ap.add_argument("--policy", default="threshold")
    ap.add_argument("--cache", default="dual")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    eager, tok = stdec.load(args.model, device=args.device)
    compiled, _ = stdec.load(args.model, device=args.device)
    compile_model(compiled)
    device = eager.device
    print(f"# {args.model} on {device} ({torch.get_num_threads()} threads), torch "
          f"{torch.__version__}; {args.policy}, {args.cache} cache; median of {args.repeats}")
    print(f"{'task':<6} {'n':>4} {'eager s':>8} {'compiled s':>10} {'ratio':>6} "
          f"{'compile s':>9} {'same':>5}")
    for name in args.tasks.split(","):
        task = get_task(name)
        prompts = [format_prompt(p) for p in task.problems("test")[: args.limit]]

        def run(model, prompts=prompts, gen_length=task.gen_length):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            out = stdec.generate(model, tok, prompts, policy=args.policy, cache=args.cache,
                                 gen_length=gen_length, block_length=math.gcd(32, gen_length))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - t0, out.texts

        # compiles every kind of step this decode takes: the first passes meet new shapes
        # (fewer rows as rows finish, other block positions) and compile those too
        first = sum(run(compiled)[0] for _ in range(3))
        run(eager)
        times = {"eager": [], "compiled": []}
        texts = {}
        for _ in range(args.repeats):  # interleaved: drifting load hits both alike
            for kind, model in (("eager", eager), ("compiled", compiled)):
                seconds, texts[kind] = run(model)
                times[kind].append(seconds)
        e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
        print(f"{name:<6} {len(prompts):>4} {e:>8.2f} {c:>10.2f} {e / c:>5.2f}x "
              f"{first - 3 * c:>9.1f} {str(texts['eager'] == texts['compiled']):>5}", flush=True)


if __name__ == "__main__":
    main()
