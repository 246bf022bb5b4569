"""The lists drill experiment: does a drill of the skill that dedupe and sort need, finding an
item's other copies in the list, lift them?

    python experiments/lists_drills.py train --out runs/lists-drills --init testbed \
        --n-layers 4 --tasks lists,count --mixture lists=1,count=1 \
        --train-sizes lists=50000,count=50000 --steps 700 --batch-size 64 --lr 3e-4 \
        --min-lr 3e-4 --warmup 20 --seed 5
    python experiments/dev_breakdown.py --model runs/lists-drills --tasks lists

The drill, `count`, asks how often an item occurs in a list of the same kind as `lists`
draws ("How many times does 65 occur in [65, 39, 65, 71]?" "2"); about a third of the items
it asks for are not in the list ("0"). For as long as the process runs, `count` is a task that
`stdec train` can train on; everything after `train` goes to it unchanged.
"""

import random
import sys
from typing import ClassVar

from stdec.cli import main as stdec_main
from stdec.tasks import Problem, Task, register_task
from stdec.tasks.base import same_but_spacing
from stdec.testbed.suites.lists import WORDS, fmt

PROMPTS = ("How many times does {x} occur in {l}?", "Count the copies of {x} in {l}.",
           "How often is {x} in the list {l}?")


class CountTask(Task):
    name = "count"
    gen_length = 8
    default_sizes: ClassVar[dict[str, int]] = {"train": 10000, "dev": 200, "test": 400}

    def sample(self, rng: random.Random) -> tuple[str, str, str, dict]:
        n = rng.randint(3, 8)  # as lists draws its inputs
        pool = rng.sample(range(100), n + 2) if rng.random() < 0.6 else rng.sample(WORDS, n)
        xs = [rng.choice(pool) for _ in range(n)]
        absent = [x for x in pool if x not in xs]
        x = rng.choice(absent) if absent and rng.random() < 1 / 3 else rng.choice(xs)
        answer = str(xs.count(x))
        return f"{x}|{fmt(xs)}", rng.choice(PROMPTS).format(x=x, l=fmt(xs)), answer, {}

    def score(self, problem: Problem, output: str) -> bool:
        return same_but_spacing(output, problem.answer)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "train":
        print(f"lists_drills.py: the first argument must be train, not "
              f"{argv[0] if argv else 'nothing'}; e.g. lists_drills.py train --out "
              f"runs/lists-drills --tasks lists,count.", file=sys.stderr)
        return 2
    return stdec_main(argv)


if __name__ in ("__main__", "__mp_main__"):  # the script, and the processes that draw splits
    register_task("count", CountTask)  # get_task("count") works from here on
if __name__ == "__main__":
    sys.exit(main())
