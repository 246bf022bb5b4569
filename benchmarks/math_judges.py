"""Two MATH judges on one set of hand-labelled answer pairs: math-verify, which scores
MATH500 now, and the hand-written judge it replaced (math_equiv.py, read from git history).

Each pair in tests/fixtures/math_pairs.jsonl is a model output, a MATH500 gold answer and
whether the two are equal (fractions, mixed numbers, intervals, \\boxed{} placement, units,
LaTeX spacing). The script prints, per kind, how many pairs each judge gets right and how
often the two judges agree, then the pairs where either judge is wrong.

    python benchmarks/math_judges.py            # the old judge as of 57b40bb
    python benchmarks/math_judges.py --old-rev REV
"""

import argparse
import json
import platform
import subprocess
import sys
import types
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from stdec.tasks.math_judge import score_output  # noqa: E402

PAIRS = ROOT / "tests" / "fixtures" / "math_pairs.jsonl"
OLD_PATH = "src/stdec/tasks/math_equiv.py"


def old_judge(rev: str):
    """The hand-written judge's score (extract the answer, then is_equiv) at `rev`."""
    source = subprocess.run(["git", "show", f"{rev}:{OLD_PATH}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("math_equiv_old")
    exec(compile(source, f"{rev}:{OLD_PATH}", "exec"), module.__dict__)
    return lambda output, gold: module.is_equiv(module.extract_answer(output), gold)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-rev", default="57b40bb",
                    help="a revision that still has math_equiv.py (default: 57b40bb)")
    args = ap.parse_args()
    old = old_judge(args.old_rev)
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # n, old ok, new ok, agree
    wrong = []
    for p in pairs:
        v_old, v_new = old(p["output"], p["gold"]), score_output(p["output"], p["gold"])
        for key in (p["kind"], "all"):
            r = rows[key]
            r[0] += 1
            r[1] += v_old == p["equal"]
            r[2] += v_new == p["equal"]
            r[3] += v_old == v_new
        if v_old != p["equal"] or v_new != p["equal"]:
            wrong.append((p, v_old, v_new))
    print(f"python {platform.python_version()}, math-verify {version('math-verify')}, "
          f"latex2sympy2_extended {version('latex2sympy2_extended')}, "
          f"sympy {version('sympy')}; old judge at {args.old_rev}")
    print(f"{'kind':<15} {'pairs':>5} {'old right':>9} {'math-verify right':>17} "
          f"{'judges agree':>12}")
    for kind, (n, o, m, a) in sorted(rows.items(), key=lambda kv: kv[0] == "all"):
        print(f"{kind:<15} {n:>5} {o:>9} {m:>17} {a:>12}")
    print("\npairs either judge gets wrong (label, old, math-verify):")
    for p, v_old, v_new in wrong:
        print(f"  {p['kind']:<14} {p['equal']!s:<5} {v_old!s:<5} {v_new!s:<5} "
              f"{p['output']!r} vs {p['gold']!r}")


if __name__ == "__main__":
    main()
