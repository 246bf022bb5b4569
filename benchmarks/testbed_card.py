"""Measure the testbed checks on the test split and write the model card.

    python benchmarks/testbed_card.py --model runs/testbed [--limit N] [--write]
    python benchmarks/testbed_card.py --model runs/testbed-vision --tuned-tau 0.95 [--write]

Rows: `fixed` with one and with four tokens per step (the parallelism penalty) and
`threshold` 0.9 (its tokens per forward), each task at its standard gen_length, EOS stop
on, with the dual cache unless --cache says otherwise; plus the wall time of each row.
A vision-language checkpoint is measured on the `vision` task against the vision testbed's
bars, with two more rows: STDec at the checkpoint's dev-tuned decoding_defaults.json and
`threshold` at the dev-tuned tau (--tuned-tau, from `stdec tune threshold`).
With --write, the card (README.md) is written into the model folder from the training log,
with --history FILE's text after the recipe (how a run's --init checkpoint was made).
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import stdec
from stdec.decoding import registry
from stdec.decoding.config import DecodeConfig
from stdec.errors import StdecError
from stdec.tasks import TASKS, evaluate, get_task
from stdec.tasks.lengths import read_gen_lengths
from stdec.util import git_commit

ROWS = {"fixed, 1 token/step": dict(policy="fixed"),
        "fixed, 4 tokens/step": dict(policy="fixed", k=4),
        "threshold 0.9": dict(policy="threshold", tau=0.9)}


def vision_rows(tuned_tau: float, defaults: dict) -> dict:
    return {**ROWS, f"threshold {tuned_tau:g} (dev-tuned)": dict(policy="threshold", tau=tuned_tau),
            "stdec (dev-tuned)": dict(policy="stdec", **{  # the checkpoint's stdec setting
                k: v for k, v in defaults.items() if k in registry.get("stdec").options})}


def measure(model, tokenizer, lengths: dict, limit: int | None, batch: int, cache: str,
            tasks=TASKS, rows=ROWS) -> dict:
    table = {}
    for name in tasks:
        gen = lengths.get(name, {}).get("gen_length", get_task(name).gen_length)
        for row, spec in rows.items():
            spec = dict(spec)
            k = spec.pop("k", 1)
            steps = {"steps": gen // k} if spec["policy"] == "fixed" else {}
            cfg = DecodeConfig(gen_length=gen, block_length=32, cache=cache, **spec, **steps)
            start = time.perf_counter()
            res = evaluate(model, tokenizer, get_task(name), "test", cfg, limit=limit,
                           batch_size=batch)
            table[(name, row)] = {"accuracy": res.accuracy, "tpf": res.gen_tokens / sum(
                r.nfe for r in res.records), "n": res.n, "seconds": time.perf_counter() - start}
            print(f"{name:6s} {row:28s} acc {100 * res.accuracy:5.1f}  TPF "
                  f"{table[(name, row)]['tpf']:.2f}  {table[(name, row)]['seconds']:.0f} s")
    return table


def checks(table: dict) -> list[str]:
    """The bars of the testbed issue, each with its measured figures and whether it is met."""
    def acc(task, row):
        return 100 * table[(task, row)]["accuracy"]

    one, four, thr = ROWS
    bars = {"gsm": 75, "code": 65, "lists": 95}
    lines = [f"- {one} on {t}: {acc(t, one):.1f}% (bar >= {b}%)"
             f" {'met' if acc(t, one) >= b else 'MISSED'}" for t, b in bars.items()]
    drops = {t: acc(t, one) - acc(t, four) for t in ("gsm", "code")}
    lines.append(f"- {four} loses {drops['gsm']:.1f} points on gsm and {drops['code']:.1f} on "
                 f"code (bar: >= 10 on either) {'met' if max(drops.values()) >= 10 else 'MISSED'}")
    tpfs = {t: table[(t, thr)]["tpf"] for t in ("gsm", "code")}
    ok = all(1.5 <= v <= 6 for v in tpfs.values())
    lines.append(f"- {thr} commits {tpfs['gsm']:.2f} tokens/forward on gsm and {tpfs['code']:.2f}"
                 f" on code (bar: 1.5 to 6 on both) {'met' if ok else 'MISSED'}")
    slowest = max(table[(t, one)]["seconds"] for t in bars)
    lines.append(f"- {one} takes at most {slowest:.0f} s for one task (bar: <= 120 s for "
                 f"the whole split) {'met' if slowest <= 120 else 'MISSED'}")
    return lines


def vision_checks(table: dict) -> list[str]:
    """The bars of the multimodal issue for the vision testbed."""
    rows = {r: v for (_, r), v in table.items()}  # one task: vision
    one, four, thr = (rows[r] for r in ROWS)
    st = rows["stdec (dev-tuned)"]
    tuned = next(v for r, v in rows.items() if r.startswith("threshold ") and "tuned" in r)
    base = 100 * one["accuracy"]
    drop, gap = base - 100 * four["accuracy"], 100 * st["accuracy"] - base
    return [
        f"- fixed, 1 token/step: {base:.1f}% (bar >= 80%) {'met' if base >= 80 else 'MISSED'}",
        f"- fixed, 4 tokens/step loses {drop:.1f} points (bar: >= 10) "
        f"{'met' if drop >= 10 else 'MISSED'}",
        f"- threshold 0.9 commits {thr['tpf']:.2f} tokens/forward (bar: 1.5 to 6) "
        f"{'met' if 1.5 <= thr['tpf'] <= 6 else 'MISSED'}",
        f"- stdec (dev-tuned) is {gap:+.1f} points from vanilla (bar: within 2) "
        f"{'met' if abs(gap) <= 2 else 'MISSED'}; its TPF {st['tpf']:.2f} against the dev-tuned "
        f"threshold's {tuned['tpf']:.2f}",
        f"- fixed, 1 token/step takes {one['seconds']:.0f} s for the test split (bar: <= 120 s) "
        f"{'met' if one['seconds'] <= 120 else 'MISSED'}",
    ]


def spans(points: list[tuple[int, str]]) -> str:
    """Runs of one value: [(1000, "a"), (2000, "a"), (3000, "b")] -> "a to step 2000, b to
    step 3000"."""
    runs = []
    for step, value in points:
        if runs and runs[-1][1] == value:
            runs[-1][0] = step
        else:
            runs.append([step, value])
    return ", ".join(f"{value} to step {step}" for step, value in runs) or "unrecorded"


def from_init(init: str) -> tuple[str, ...]:
    """The vision recipe's options that --init's checkpoint sets (the CLI refuses them with
    it): the language model's shape, and the tower's too when it is a vision checkpoint."""
    if not init:
        return ()
    text = ("d_model", "n_layers", "n_heads", "mlp_hidden_size", "vocab_size")
    from stdec.cli import init_is_vision

    try:
        vision = init_is_vision(init)
    except StdecError:  # not on this machine: its tower's options stay in the command
        vision = False
    return text + ("vision_hidden", "vision_layers", "patch_size") * vision


def card(folder: Path, table: dict, limit: int | None, cache: str, vision: bool = False,
         history: str = "", tuned_tau: float | None = None) -> str:
    """The model card. `history`: what the training records do not hold, in the trainer's
    words (a run started from another run's checkpoint: how that one was made). `tuned_tau`:
    the dev-tuned threshold a vision card was measured with, for its reproduce line."""
    log = json.loads((folder / "train_log.json").read_text())
    cfg, entries = log["config"], log["log"]
    # a vision run from --init: the options its checkpoint sets are not part of the command
    skip = ("out", *from_init(cfg.get("init", ""))) if vision else ("out",)
    args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in cfg.items()
                    if v not in (None, "") and k not in skip)
    size = f"{sum(p.numel() for p in stdec.load_model(folder).parameters()) / 1e6:.1f}M"
    rows = ["| task | rule | accuracy % | tokens/forward | n | seconds |",
            "|---|---|---|---|---|---|"]
    for (task, row), r in table.items():
        rows.append(f"| {task} | {row} | {100 * r['accuracy']:.1f} | {r['tpf']:.2f} | {r['n']} "
                    f"| {r['seconds']:.0f} |")
    subset = "" if limit is None else f", first {limit} problems"
    elapsed = entries[-1]["elapsed_s"] if entries else float("nan")
    # recorded by `stdec train` on the machine that trained it, not this one
    where = log.get("hardware", "unrecorded hardware")
    # entries logged before stdec recorded precision hold none: that code autocast on CUDA only
    settings = [[(e["step"], e.get("precision", "unrecorded (fp32 on a CPU, bf16 on CUDA)"))
                 for e in entries],
                [(e["step"], e.get("tasks", "unrecorded")) for e in entries],
                [(e["step"], f"{e['schedule_steps']}-step cosine" if "schedule_steps" in e
                  else "unrecorded") for e in entries]]
    precision, mixture, schedule = map(spans, settings)
    changed = any(len({value for _, value in points}) > 1 for points in settings)
    history = ("The command is the final recipe, from scratch in one run; the run that made this "
               "checkpoint was resumed with changes along the way, listed below.\n\n"
               if changed else "") + (history.strip() + "\n\n" if history.strip() else "")
    if vision:
        title = "stdec vision testbed (a small LLaDA-V)"
        about = f"""A {size}-parameter LLaDA-V-layout vision-language
masked diffusion model (a SigLIP tower, an MLP projector, a LLaDA language model) trained
by `stdec train --tasks vision` on pictures stdec draws itself (shapes, colours, counts,
positions, small bar charts), bundled so that decoding rules can be measured on image
prompts anywhere with no downloads. It is a measuring instrument, not a useful
vision-language model."""
        args, details = "--tasks vision " + args, ("float32, a cosine learning-rate schedule over "
                                                     "--steps (a resume may change its length).")
        dev = " Dev accuracy (vanilla) at the logged evaluations: " + ", ".join(
            f"{100 * e['dev']:.0f}% at step {e['step']}" for e in entries) + "."
        checked = vision_checks(table)
    else:
        title = "stdec testbed dLLM"
        about = f"""A {size}-parameter LLaDA-architecture masked diffusion model trained by
`stdec train` on the synthetic suite (gsm, code, lists), bundled so that stdec runs and
measures decoding rules anywhere with no downloads. It is a measuring instrument, not a
useful language model."""
        details = (f"Precision at the logged evaluations (bf16: autocast over\nfloat32 weights): "
                   f"{precision}. Tasks trained on: {mixture}.\nLearning-rate schedule (a resume "
                   f"may change its length): {schedule}.")
        dev, checked = "", checks(table)
    return f"""# {title}

{about}

## Recipe

```bash
stdec train {args} --out OUT
```

{history}seed {cfg['seed']}; card measured at git commit {git_commit()[:12]}; training time
{elapsed / 60:.0f} min on {where}; Python {platform.python_version()},
torch {torch.__version__}. {details}{dev}

## Test split (standard gen_length, {cache} cache, EOS stop on{subset}, 2 CPU threads)

{chr(10).join(rows)}

Checks (the bars this model was trained to meet):

{chr(10).join(checked)}

Reproduce: `python benchmarks/testbed_card.py --model {folder.name} --cache {cache}\
{"" if tuned_tau is None else f" --tuned-tau {tuned_tau:g}"}` from the repository root.
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="testbed")
    parser.add_argument("--limit", type=int, default=None, help="test problems per task")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--cache", default="dual", choices=["none", "prefix", "dual"])
    parser.add_argument("--tuned-tau", type=float, default=None,
                        help="vision testbed: the dev-tuned threshold (stdec tune threshold)")
    parser.add_argument("--write", action="store_true", help="write README.md into the model")
    parser.add_argument("--history", type=Path, default=None,
                        help="a Markdown file: what the training log does not record")
    args = parser.parse_args()
    from stdec.api import resolve_model_path
    from stdec.decoding.defaults import checkpoint_defaults
    from stdec.models import model_class, read_config
    from stdec.models.images import sees_images

    folder = resolve_model_path(args.model)
    vision = sees_images(model_class(read_config(folder), folder))
    if vision and args.tuned_tau is None:
        parser.error("a vision testbed needs --tuned-tau (from stdec tune threshold)")
    model, tokenizer = stdec.load(folder, device="cpu")
    tasks, rows = TASKS, ROWS
    if vision:
        defaults = checkpoint_defaults(args.model, folder, read_config(folder))
        tasks, rows = ("vision",), vision_rows(args.tuned_tau, defaults)
    table = measure(model, tokenizer, read_gen_lengths(folder), args.limit, args.batch_size,
                    args.cache, tasks, rows)
    if args.write:
        history = args.history.read_text() if args.history else ""
        (folder / "README.md").write_text(card(folder, table, args.limit, args.cache, vision,
                                               history, args.tuned_tau))
        print(f"wrote {folder / 'README.md'}")


if __name__ == "__main__":
    main()
