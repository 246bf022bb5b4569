#!/usr/bin/env bash
# Mutation testing as a habit, not in CI: mutmut (pip install -e '.[mutation]') over one
# area of stdec, in a scratch copy of the committed tree (the working tree is never touched).
# Each area runs a fast, targeted test selection; mutmut then runs, for every mutant, only
# the selected tests that reach the mutated function.
#
#   benchmarks/mutation.sh AREA [BUDGET_S]     AREA: models | decoding | scorers | tune | all
#   MUTANT_GLOB='*__mutmut_*[37]' benchmarks/mutation.sh decoding   a fifth of the mutants
#
# MUTANT_GLOB picks mutants by name (fnmatch; several, space-separated: e.g. the survivors of
# an earlier run, to check new tests against them); ending in a digit class it samples every
# function's mutants by their number, about a tenth per digit, for a quick estimate on a
# busy machine (functions with fewer mutants than the smallest digit are then skipped).
# Prints the survival rate (survived / (killed + survived); a mutant no selected test reaches
# counts as survived, a timeout as killed), and beside it the rate with two kinds of
# equivalent mutant set aside, read from each survivor's diff: a tensor's `device=` dropped
# or set to None (the same tensor on the CPU; tests/test_gpu.py runs these lines on CUDA), and
# a zip's strict=True made False (a guard: equivalent while the lengths agree, as they do
# wherever a test reaches). It writes every survivor's diff to
# $MUTATION_DIR/AREA/survivors.diff. A run that hits BUDGET_S (default 1800 s) reports the
# mutants it checked. Error-message wording (raise ... statements) and the tqdm progress
# labels are not mutated: changing a sentence is not a bug a test should pin letter by letter.
# Runs under nice -n 19 with two workers: it is CPU-heavy.
set -euo pipefail
# the body is one function and its call one line, read whole before it runs: editing this
# file during a long run cannot change the run

main() {
area=${1:?usage: benchmarks/mutation.sh models|decoding|scorers|tune|all [budget_s]}
budget=${2:-1800}
root=${STDEC_ROOT:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}
base=${MUTATION_DIR:-/tmp/stdec-mutation}

if [ "$area" = all ]; then
    for a in models scorers tune decoding; do "$0" "$a" "$budget"; done
    exit 0
fi

case $area in
models)
    # the text models (the vision files, llada_v.py and images.py, have their own tests)
    mutate=(src/stdec/models/{__init__,cache,dream,layers,llada}.py)
    tests=(tests/test_llada.py tests/test_dream.py tests/test_precision.py tests/test_fused.py
           tests/test_models_values.py tests/test_api.py::test_bad_checkpoints -k
           "not testbed and not decodes_mostly");;
decoding)
    mutate=(src/stdec/decoding/{config,defaults,registry,engine,scheduler,runner,commit,policies}.py)
    tests=(tests/test_policies.py tests/test_edges.py tests/test_decoding.py tests/test_eos_stop.py
           tests/test_confidence.py tests/test_engine.py tests/test_rules.py tests/test_dkv.py
           tests/test_defaults.py tests/test_llada_v.py tests/test_options.py
           tests/test_api.py::test_bad_decode_options_fail_with_one_sentence
           tests/test_static_step.py tests/test_lavida.py  # fixed-shape steps, prefix LMs
           --deselect tests/test_static_step.py::test_a_compiled_model_decodes_what_the_plain_one_does
           --deselect tests/test_static_step.py::test_static_steps_decode_testbed_problems_as_the_plain_ones);;
scorers)
    mutate=(src/stdec/tasks/base.py src/stdec/testbed/suites/lists.py
            src/stdec/testbed/suites/arith.py src/stdec/testbed/suites/gsm.py
            src/stdec/tasks/real.py src/stdec/tasks/math_judge.py)
    tests=(tests/test_scorers.py tests/test_tasks.py tests/test_real_tasks.py -k
           "scorer or score or arith or gsm or math or splits or registry or loaders")
    # the scorers, not the problem generators and file loaders around them
    : "${MUTANT_GLOB:=*same_but_spacing__mutmut_* *ǁscore__mutmut_* *parse_answer__mutmut_*
        *gsm8k_number__mutmut_* stdec.tasks.math_judge.*__mutmut_*}";;
tune)
    mutate=(src/stdec/tune.py src/stdec/bench.py)
    tests=(tests/test_tune_choice.py tests/test_bench.py -k
           "tune or policy_specs or bad_bench or pareto or complete_results");;
*)
    echo "unknown area $area; choose models, decoding, scorers, tune or all" >&2
    exit 2;;
esac

work=$base/$area
rm -rf "$work"
mkdir -p "$work"
git -C "$root" archive HEAD | tar -x -C "$work"
cd "$work"
{
    echo "[mutmut]"
    echo "source_paths = src"
    echo "only_mutate ="
    for f in "${mutate[@]}"; do echo "    $f"; done
    echo "do_not_mutate_patterns ="
    echo "    raise [A-Za-z]*Error\\("
    echo "    desc="
    echo "also_copy ="  # the fixtures every test reads live in the root conftest.py
    echo "    conftest.py"
    echo "pytest_add_cli_args_test_selection ="
    for t in "${tests[@]}"; do echo "    $t"; done
    echo "pytest_add_cli_args ="
    printf '    %s\n' -x -q -p no:cacheprovider
    echo "process_isolation = forkserver"  # torch is not fork-safe
    echo "use_git_change_detection = false"
    echo "track_dependencies = false"
} > setup.cfg

export OMP_NUM_THREADS=1  # two workers on two cores
status=0
set -f  # MUTANT_GLOB: space-separated names or patterns, never expanded as file names
glob=(${MUTANT_GLOB:-})
set +f
nice -n 19 timeout "$budget" python -m mutmut run --max-children 2 "${glob[@]}" > run.log 2>&1 \
    || status=$?
[ "$status" = 124 ] && echo "$area: stopped at the ${budget} s budget; partial figures" >&2

python -m mutmut results --all true > results.txt 2>/dev/null || true
python - "$area" <<'EOF'
import re, subprocess, sys
from collections import Counter

area = sys.argv[1]
rows = [ln.strip().rsplit(": ", 1) for ln in open("results.txt") if ": " in ln]
count = Counter(status for _, status in rows)
killed = count["killed"] + count["timeout"]
survived = count["survived"] + count["no tests"]
checked = killed + survived
rate = survived / checked if checked else 0.0
print(f"{area}: {checked} of {len(rows)} mutants checked, {killed} killed, {survived} survived "
      f"(survival rate {100 * rate:.1f} %); {dict(count)}")


def plain(line: str) -> str:
    """A source line with its device placements and zip strictness taken out."""
    line = re.sub(r"device=(None|[\w.]+)", "", line)
    line = re.sub(r"strict=(True|False)", "", line)
    line = re.sub(r"\s+", "", line)
    return re.sub(r",+\)", ")", re.sub(r",,+", ",", line))


def equivalent(diff: str) -> str | None:
    """Which kind of equivalent mutant a survivor's diff is, if it is one."""
    lines = diff.splitlines()
    old = [ln[1:] for ln in lines if ln.startswith("-") and not ln.startswith("---")]
    new = [ln[1:] for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
    if not old or len(old) != len(new) or [plain(a) for a in old] != [plain(b) for b in new]:
        return None
    return "zip strict" if any("strict=" in a for a in old) else "device placement"


aside = Counter()
with open("survivors.diff", "w") as out:
    for name, status in rows:
        if status in ("survived", "no tests"):
            diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name],
                                  capture_output=True, text=True).stdout
            kind = equivalent(diff)
            if kind:
                aside[kind] += 1
            note = f" (equivalent: {kind})" if kind else ""
            out.write(f"# {name}: {status}{note}\n{diff}\n")
            print(f"  {status}{note}: {name}")
left = survived - sum(aside.values())
rest = checked - sum(aside.values())
print(f"{area}: with {dict(aside) or 'no'} equivalent mutants set aside, {left} of {rest} "
      f"survived (survival rate {100 * left / rest if rest else 0.0:.1f} %)")
EOF
echo "survivor diffs: $work/survivors.diff"
}

main "$@"; exit  # one line: bash has read it whole before main runs
