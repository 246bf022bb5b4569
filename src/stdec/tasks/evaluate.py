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
    wall_time: float  # seconds spent decoding (one engine run)
    tokens_per_s: float  # gen_tokens / wall_time
    records: list[EvalRecord] = field(default_factory=list)


def problem_seed(run_seed: int, problem_id: str) -> int:
    """The sampling seed of one problem in a run: the same however the run is batched,
    ordered or sharded over ranks (only used when the temperature is above 0)."""
    digest = hashlib.blake2b(f"{run_seed}|{problem_id}".encode(), digest_size=7).digest()
    return int.from_bytes(digest, "big")


def generate_problems(model: Any, tokenizer: Any, problems: list, config: Any, *,
                      batch_size: int = 16, on_finish: Any = None) -> tuple[Any, float, float]:
    """Decode `problems` through the chat template in one engine run of `batch_size` slots
    (a finished problem's slot takes the next at once): the Generation, the seconds it took
    (device synchronised around the timer) and this process's CPU seconds in them (what
    other work on a shared CPU disturbs less).

    With a temperature, each problem samples from its own seed (problem_seed), so its text
    does not depend on the problems decoded beside it or on the rank that decodes it.
    """
    from stdec.api import generate  # the harness sits above api (torch loads here, not before)
    from stdec.tasks.base import problem_images

    images = [problem_images(p) for p in problems]  # drawn or read before the timer starts
    # greedy rows share one config, so the engine commits them in one rule call
    seeds = [problem_seed(config.seed, p.id) for p in problems] if config.temperature > 0 \
        else None
    _sync(model)
    t0, c0 = time.perf_counter(), time.process_time()
    out = generate(model, tokenizer, [format_prompt(p) for p in problems], config, chat=True,
                   seed=seeds, images=images if any(images) else None, batch_size=batch_size,
                   on_finish=on_finish)
    _sync(model)
    return out, time.perf_counter() - t0, time.process_time() - c0


def score_problems(task: Task, problems: list, out: Any) -> list[EvalRecord]:
    """The records of generate_problems' output, scored."""
    return [EvalRecord(p.id, ok, text, st.nfe, st.gen_tokens)
            for p, text, st, ok in zip(problems, out.texts, out.stats,
                                       task.score_many(problems, out.texts), strict=True)]


def _sync(model: Any):
    device = getattr(model, "device", None)
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def decode_problems(model: Any, tokenizer: Any, task: Task, problems: list, config: Any, *,
                    batch_size: int = 16, progress: str = "") -> tuple[list[EvalRecord], float]:
    """Decode `problems` (generate_problems: one engine run, `batch_size` at once) and
    score them. Returns the records and the seconds spent decoding (scoring excluded). With
    `progress`, a line under that label goes to stderr each time another `batch_size`
    problems have finished, and one with the accuracy at the end.
    """
    done = 0

    def tick(i: int, text: str):
        nonlocal done
        done += 1
        if done % batch_size == 0 and done < len(problems):
            print(f"{progress}: {done}/{len(problems)} decoded", file=sys.stderr)

    if not problems:
        return [], 0.0
    out, wall, _ = generate_problems(model, tokenizer, problems, config,
                                     batch_size=batch_size, on_finish=tick if progress else None)
    records = score_problems(task, problems, out)
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
