"""`stdec tune`: sweep a policy's parameters on the dev split, keep the fastest that holds
accuracy.

The pick is the setting with the highest mean TPF over the tasks whose accuracy on every
task is within `tolerance` of vanilla decoding (`fixed`, one token per step) on that task.
Only the dev split is ever read, so test figures stay honest.
"""

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from stdec.bench import VANILLA, PolicySetting, dist_setup, parse_policy, run_cell, write_atomic
from stdec.decoding import registry
from stdec.errors import StdecError

__all__ = ["TuneResult", "parse_grid", "tune"]

@dataclass
class TuneResult:
    policy: str
    vanilla: dict  # the row of vanilla decoding (fixed, one token per step)
    rows: list[dict]  # one per setting: label, params, per-task accuracy and TPF, mean TPF
    best: dict | None  # the chosen row, None when no setting held accuracy


def parse_grid(policy: str, items: list[str] | None) -> dict[str, list]:
    """`key=v1,v2` items (or the default grid) into {key: [values]}, each value checked."""
    if not items:
        grid = registry.get(policy).grid
        if not grid:
            raise StdecError(f"no default grid for policy {policy!r}; pass --grid key=v1,v2.")
        return {key: list(values) for key, values in grid.items()}
    raw = {}
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not values:
            raise StdecError(f"bad grid item {item!r}; write key=v1,v2,...")
        raw[key] = values.split(",")
    # each whole setting is checked as it will run: a value may be valid only beside others
    # (stdec's tau_low must not exceed tau_high), so values are never checked alone
    specs = [",".join(f"{k}={v}" for k, v in zip(raw, combo, strict=True))
             for combo in itertools.product(*raw.values())]
    settings = [parse_policy(f"{policy}:{spec}") for spec in specs]
    return {key: list(dict.fromkeys(dict(s.params)[key] for s in settings)) for key in raw}


def tune(model, tokenizer, policy: str, grid: dict[str, list], tasks: list[str], *,
         cache: str = "none", limit: int | None = None, batch_size: int = 64,
         block_length: int = 32, tolerance: float = 0.01, lengths: dict | None = None,
         progress: bool = True, unsandboxed: bool = False) -> TuneResult:
    """Sweep `grid` for `policy` on the dev split of `tasks` (standard gen_length)."""
    from tqdm import tqdm

    from stdec.api import model_defaults
    from stdec.tasks import get_task
    from stdec.tasks.lengths import gen_lengths

    rank, world = dist_setup()
    task_objs = {name: get_task(name) for name in tasks}
    for task in task_objs.values():
        task.unsandboxed = unsandboxed  # --allow-unsandboxed-code
    lengths = lengths or gen_lengths(tokenizer, task_objs, block_length)
    # data parallel: each rank decodes its share; run_cell sums the counts over ranks
    dev = {name: t.problems("dev")[:limit][rank::world] for name, t in task_objs.items()}
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    settings = [PolicySetting(policy, tuple(c.items())) for c in combos]
    bar = tqdm(total=len(tasks) * (len(settings) + 1), desc=f"tune {policy}",
               disable=not progress)

    def measure(setting: PolicySetting) -> dict:
        row = {"label": setting.label, "params": dict(setting.params), "accuracy": {},
               "tpf": {}}
        for name, task in task_objs.items():
            gen = lengths[name]["gen_length"]
            config = setting.config(gen, block_length, model_defaults(model), cache=cache)
            r = run_cell(model, tokenizer, task, dev[name], config, batch_size, world)
            row["accuracy"][name] = r.correct / r.n
            row["tpf"][name] = r.gen_tokens / r.nfe
            bar.update(1)
        row["mean_tpf"] = sum(row["tpf"].values()) / len(tasks)
        return row

    vanilla = measure(parse_policy(VANILLA))
    rows = [measure(s) for s in settings]
    bar.close()
    for row in rows:
        row["holds_accuracy"] = all(row["accuracy"][t] >= vanilla["accuracy"][t] - tolerance
                                    for t in tasks)
    eligible = [r for r in rows if r["holds_accuracy"]]
    best = max(eligible, key=lambda r: r["mean_tpf"]) if eligible else None
    return TuneResult(policy, vanilla, rows, best)


def report(result: TuneResult, out: str | Path | None = None) -> str:
    tasks = list(result.vanilla["accuracy"])
    head = "| setting | " + " | ".join(f"{t} acc | {t} TPF" for t in tasks) + " | mean TPF | ok |"
    lines = [head, "|" + "---|" * (2 * len(tasks) + 3)]
    for r in [result.vanilla, *sorted(result.rows, key=lambda r: -r["mean_tpf"])]:
        cells = " | ".join(f"{100 * r['accuracy'][t]:.1f} | {r['tpf'][t]:.2f}" for t in tasks)
        mark = ("baseline" if r is result.vanilla else "best" if r is result.best
                else "yes" if r["holds_accuracy"] else "no")
        lines.append(f"| {r['label']} | {cells} | {r['mean_tpf']:.2f} | {mark} |")
    best = result.best["label"] if result.best else "none held accuracy"
    text = "\n".join(lines) + f"\n\nbest {result.policy} setting on dev: {best}"
    if out:
        out = Path(out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, (json.dumps(result.__dict__, indent=1) + "\n").encode())
    return text
