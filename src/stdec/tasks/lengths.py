"""How a task's problems become token ids, and the generation lengths that fit them."""

import json
import math
from pathlib import Path

from stdec.tasks.base import Problem

__all__ = ["LENGTHS_FILE", "encode_problem", "encode_problems", "gen_lengths",
           "read_gen_lengths"]

LENGTHS_FILE = "stdec_tasks.json"  # written beside a trained checkpoint's weights


def encode_problem(tokenizer, problem: Problem) -> tuple[list[int], list[int]]:
    """(prompt ids through the chat template, response ids closed by <|eot_id|>)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": problem.prompt}],
                                         tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer = tokenizer(problem.answer, add_special_tokens=False)["input_ids"]
    return prompt, answer + [tokenizer.convert_tokens_to_ids("<|eot_id|>")]


def encode_problems(tokenizer, problems: list[Problem]) -> list[tuple[list[int], list[int]]]:
    """encode_problem over many problems, in two batched tokenizer calls."""
    if not problems:
        return []
    def render(content: str) -> str:
        return tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                             tokenize=False, add_generation_prompt=True)

    # the template rendered once around a marker: rendering it per problem costs more than
    # tokenizing; kept only where it gives what the template gives for the first problems
    marker = "\ue000"
    frame = render(marker)
    texts = [frame.replace(marker, p.prompt) for p in problems]
    if frame.count(marker) != 1 or any(render(p.prompt) != t
                                       for p, t in zip(problems[:8], texts, strict=False)):
        texts = [render(p.prompt) for p in problems]
    prompts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    answers = tokenizer([p.answer for p in problems], add_special_tokens=False)["input_ids"]
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    return [(p, a + [eot]) for p, a in zip(prompts, answers, strict=True)]


def gen_lengths(tokenizer, tasks: dict, block: int = 32, long_factor: int = 4) -> dict:
    """Per task: the standard gen_length (fits every gold answer of the train and dev
    splits) and the long one (long_factor x the longest), both multiples of `block`.
    The test split is never read: its answers must not shape the settings."""
    out = {}
    for name, task in tasks.items():
        answers = [p.answer for split in ("train", "dev") for p in task.problems(split)]
        # one batched call over the answers alone: the prompts do not matter here
        encoded = tokenizer(answers, add_special_tokens=False)["input_ids"]
        longest = 1 + max(map(len, encoded))  # + <|eot_id|>, as encode_problem closes them
        out[name] = {"gen_length": block * math.ceil(longest / block),
                     "long_gen_length": block * math.ceil(long_factor * longest / block),
                     "longest_answer_tokens": longest}
    return out


def read_gen_lengths(folder: str | Path) -> dict:
    """The lengths a trained checkpoint was made for, or {} when it has none."""
    path = Path(folder) / LENGTHS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
