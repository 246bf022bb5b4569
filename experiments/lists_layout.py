"""The lists layout experiment: dedupe and sort answers that write a worked line before their
list, as gsm answers write their arithmetic before the result.

    python experiments/lists_layout.py train --out runs/lists-worked --init testbed \
        --n-layers 4 --tasks lists --train-sizes lists=50000 --steps 700 --batch-size 64 \
        --lr 3e-4 --min-lr 3e-4 --warmup 20 --seed 5
    python experiments/lists_layout.py breakdown --model runs/lists-worked --limit 200

Dedupe numbers each first occurrence and marks each repeat, so the answer's length is the
last number written: "1: cat, 2: dog, cat again. So [cat, dog]". Sort counts each distinct
item in order, so the repeats are written down before the list needs them: "2 of ant,
1 of cat. So [ant, ant, cat]". Copy and reverse answers are unchanged, and so are the
prompts and the splits (a problem's key is its operation and input list). The scorer
reads the last list the output writes.

For as long as the process runs, the suite's `lists` task is this one: `train` hands the rest
of its arguments to `stdec train` unchanged. `breakdown` decodes the dev split the vanilla
way, as experiments/dev_breakdown.py does, and prints by kind of problem how often the final
list is right and, for dedupe and sort, how often the worked line is.
"""

import argparse
import random
import re
import sys
from collections import Counter

import dev_breakdown
import torch

import stdec
from stdec.api import resolve_model_path
from stdec.cli import main as stdec_main
from stdec.tasks import get_task, register_task, registered_task
from stdec.tasks.base import Problem, same_but_spacing
from stdec.tasks.lengths import read_gen_lengths
from stdec.testbed.suites.lists import ListsTask

LIST = re.compile(r"\[[^\[\]]*\]")


def worked(op: str, xs: list) -> str:
    """The line a dedupe or sort answer writes before its list; "" for copy and reverse."""
    if op == "dedupe":
        firsts: list = []
        parts = []
        for x in xs:
            if x in firsts:
                parts.append(f"{x} again")
            else:
                firsts.append(x)
                parts.append(f"{len(firsts)}: {x}")
        return ", ".join(parts)
    if op == "sort":
        counts = Counter(xs)
        return ", ".join(f"{counts[x]} of {x}" for x in sorted(counts))
    return ""


class WorkedListsTask(ListsTask):
    def sample(self, rng: random.Random) -> tuple[str, str, str, dict]:
        key, prompt, result, meta = super().sample(rng)  # the same draws, so the same problems
        items = key.split("|", 1)[1][1:-1].split(", ")  # the key is "op|[a, b, ...]"
        xs = [int(x) if x.isdigit() else x for x in items]
        line = worked(meta["op"], xs)
        answer = f"{line}. So {result}" if line else result
        return key, prompt, answer, {**meta, "list": result}

    def score(self, problem: Problem, output: str) -> bool:
        lists = LIST.findall(output)
        return bool(lists) and same_but_spacing(lists[-1], problem.meta["list"])


def breakdown(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="lists_layout.py breakdown")
    parser.add_argument("--model", required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block-length", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = stdec.load(args.model)
    lengths = read_gen_lengths(resolve_model_path(args.model))
    problems, result, gen = dev_breakdown.vanilla_dev(model, tokenizer, get_task("lists"),
                                                      lengths, args)
    print(f"lists, worked layout ({args.split}, n={result.n}, gen_length {gen}): "
          f"{100 * result.accuracy:.1f}%")
    dev_breakdown.print_by_kind("lists", problems, [r.correct for r in result.records])
    pairs = [(p, r.output) for p, r in zip(problems, result.records, strict=True)
             if p.meta["op"] in ("dedupe", "sort")]
    line_right = [out.split(". So", 1)[0].strip() == p.answer.split(". So", 1)[0]
                  for p, out in pairs]
    dev_breakdown.print_by_kind("lists", [p for p, _ in pairs], line_right, ", worked line")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("train", "breakdown"):
        print(f"lists_layout.py: the first argument must be train or breakdown, not "
              f"{argv[0] if argv else 'nothing'}; e.g. lists_layout.py breakdown --model "
              f"runs/lists-worked.", file=sys.stderr)
        return 2
    with registered_task("lists", WorkedListsTask, replace=True):  # get_task("lists") builds it
        if argv[0] == "train":
            return stdec_main(argv)
        breakdown(argv[1:])
    return 0


if __name__ == "__mp_main__":  # a process the script spawns (train draws splits in them)
    register_task("lists", WorkedListsTask, replace=True)
if __name__ == "__main__":
    sys.exit(main())
