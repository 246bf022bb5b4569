"""`stdec bench --table paper`: the layout of the STDec paper's main table for any model and
tasks. Rows are methods (a rule with its cache), columns TPS, speedup over vanilla and
score per task and on average. Each cache's rows run as one `stdec bench` grid (so their
timings are interleaved, side by side); speedups are over the Vanilla row's tokens/s."""

import statistics
import sys
from dataclasses import replace
from pathlib import Path

from stdec.bench import BenchConfig, run_bench, write_atomic
from stdec.decoding import registry

__all__ = ["rows", "paper_table", "run_paper"]

def rows() -> tuple[tuple[str, str, str], ...]:
    """(label, policy spec, cache): each rule's paper rows, in registry order. Every rule
    takes the checkpoint's defaults (stdec.decoding_defaults)."""
    return tuple(row for rule in registry.RULES.values() for row in rule.paper)


def run_paper(cfg: BenchConfig, *, progress: bool = True, out: Path | None = None) -> str:
    """Run every row on cfg's tasks (standard length, EOS stop on); returns the table as
    Markdown and writes it, with each cache's results, under `out`."""
    out = Path(out if out is not None else cfg.out)
    records: dict[str, dict[str, dict]] = {}  # label -> task -> record
    for cache in dict.fromkeys(c for _, _, c in rows()):
        picked = [(label, spec) for label, spec, c in rows() if c == cache]
        specs = tuple(dict.fromkeys(spec for _, spec in picked))  # vanilla runs once anyway
        grid = replace(cfg, policies=specs, caches=(cache,), lengths=("standard",),
                       stop_at_eos=(True,))
        found = run_bench(grid, progress=progress, out=out / cache)
        for label, spec in picked:
            for rec in found:
                if rec["label"] == spec:
                    records.setdefault(label, {})[rec["task"]] = rec
    text = paper_table(records, list(dict.fromkeys(t.partition("=")[0] for t in cfg.tasks)))
    write_atomic(out / "paper.md", text.encode())
    return text


def paper_table(records: dict[str, dict[str, dict]], tasks: list[str]) -> str:
    """Markdown: one row per method, TPS / speedup / score for each task and on average."""
    head = ["method"] + [f"{t} {c}" for t in [*tasks, "average"]
                         for c in ("TPS", "speedup", "score")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = records.get("Vanilla", {})
    for label, _, cache in rows():
        per = records.get(label)
        if not per:
            continue
        cells, tps, ups, scores = [], [], [], []
        for task in tasks:
            rec = per.get(task)
            if rec is None:
                cells += ["-"] * 3
                continue
            up = rec["tokens_per_s"] / base[task]["tokens_per_s"] if task in base else None
            tps.append(rec["tokens_per_s"])
            scores.append(100 * rec["accuracy"])
            ups += [up] if up is not None else []
            cells += [f"{rec['tokens_per_s']:.1f}", f"{up:.2f}x" if up else "-",
                      f"{100 * rec['accuracy']:.1f}"]
        cells += [f"{statistics.mean(tps):.1f}" if tps else "-",
                  f"{statistics.mean(ups):.2f}x" if ups else "-",
                  f"{statistics.mean(scores):.1f}" if scores else "-"]
        lines.append(f"| {label} ({cache}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m stdec.paper: the testbed's table, code and lists
    print(run_paper(BenchConfig(tasks=("code", "lists"), limit=40, repeats=1),
                    out=Path(sys.argv[1]) if len(sys.argv) > 1 else None))
