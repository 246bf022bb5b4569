"""Decode a task split with a model and score it: accuracy plus aggregated decoding stats."""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from stdec.tasks.base import Task, format_prompt


@dataclass(frozen=True)
class EvalRecord:
    id: str
    correct: bool
    output: str
    nfe: int
    gen_tokens: int


@dataclass
class EvalResult:
    task: str
    split: str
    n: int
    accuracy: float
    mean_nfe: float
    mean_tpf: float  # mean over rows of tokens per forward
    gen_tokens: int  # total over rows
    wall_time: float  # seconds spent inside generate, summed over batches
    tokens_per_s: float  # gen_tokens / wall_time
    records: list[EvalRecord] = field(default_factory=list)


def problem_seed(run_seed: int, problem_id: str) -> int:
    """The sampling seed of one problem in a run: the same however the run is batched,
    ordered or sharded over ranks (only used when the temperature is above 0)."""
    digest = hashlib.blake2b(f"{run_seed}|{problem_id}".encode(), digest_size=7).digest()
    return int.from_bytes(digest, "big")


def decode_problems(model: Any, tokenizer: Any, task: Task, problems: list, config: Any, *,
                    batch_size: int = 16, progress: str = "") -> tuple[list[EvalRecord], float]:
    """Decode `problems` in batches through the chat template and score them.

    With a temperature, each problem samples from its own seed (problem_seed), so its text
    does not depend on the batch it lands in or on the rank that decodes it.
    Returns the records and the seconds spent inside generate (scoring excluded). With
    `progress`, a running accuracy line under that label goes to stderr after each batch.
    """
    from stdec.api import generate  # the harness sits above api (torch loads here, not before)
    from stdec.tasks.base import problem_images

    records: list[EvalRecord] = []
    wall = 0.0
    for i in range(0, len(problems), batch_size):
        batch = problems[i : i + batch_size]
        images = [problem_images(p) for p in batch]  # drawn or read for this batch only, untimed
        t0 = time.perf_counter()
        # greedy rows share one config, so the engine commits them in one rule call
        seeds = [problem_seed(config.seed, p.id) for p in batch] if config.temperature > 0 \
            else None
        out = generate(model, tokenizer, [format_prompt(p) for p in batch], config, chat=True,
                       seed=seeds, images=images if any(images) else None)
        wall += time.perf_counter() - t0
        for p, text, st, ok in zip(batch, out.texts, out.stats, task.score_many(batch, out.texts),
                                   strict=True):
            records.append(EvalRecord(p.id, ok, text, st.nfe, st.gen_tokens))
        if progress:
            acc = sum(r.correct for r in records) / len(records)
            print(f"{progress}: {len(records)}/{len(problems)} acc {acc:.3f}", file=sys.stderr)
    return records, wall


def evaluate(
    model: Any,
    tokenizer: Any,
    task: Task | str,
    split: str,
    config: Any,
    *,
    limit: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> EvalResult:
    """Generate answers for `split` of `task` with `config` (a DecodeConfig) and score them."""
    from stdec.tasks import get_task

    task = get_task(task) if isinstance(task, str) else task
    problems = task.problems(split)[:limit]
    records, wall = decode_problems(model, tokenizer, task, problems, config,
                                    batch_size=batch_size,
                                    progress=f"{task.name}/{split}" if progress else "")
    n = len(records)
    tokens = sum(r.gen_tokens for r in records)
    return EvalResult(
        task=task.name, split=split, n=n,
        accuracy=sum(r.correct for r in records) / max(n, 1),
        mean_nfe=sum(r.nfe for r in records) / max(n, 1),
        mean_tpf=sum(r.gen_tokens / r.nfe for r in records) / max(n, 1),
        gen_tokens=tokens, wall_time=wall, tokens_per_s=tokens / wall if wall > 0 else 0.0,
        records=records)
