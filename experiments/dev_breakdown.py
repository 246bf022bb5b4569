"""Where a testbed loses its points: dev accuracy by kind of problem, and how often the
arithmetic it writes is right.

    python experiments/dev_breakdown.py --model testbed --tasks gsm,lists,arith --limit 200
    python experiments/dev_breakdown.py --model runs/vision --tasks vision

Vanilla decoding: `fixed`, one token per step, dual cache (blocks of 32 unless
--block-length says otherwise), at each task's standard gen_length
(the checkpoint's, as the model card uses; else the task's, rounded up to blocks of 32).
Kinds: gsm by template, code by family, lists by operation and item (numbers or words),
vision by question kind and scene. For gsm and arith, every
"a op b = r" the output writes is also checked, by operator: a model that lays out its
solution right but computes wrongly shows here, not in the accuracy alone. With --probe,
gsm also gets a teacher-forced check on its gold solutions: each result of an
"a op b = r" is masked, alone and then with every later occurrence of r, and the model must
give it back. Right alone but wrong with the copies masked means it copies results from
later in the text instead of computing them. For vision, --probe masks only the fact of each
gold answer (the colour, place, number... it asks for) and the model must give it back, by
kind of question, once with the problem's own picture and once with another problem's: what
it gets right with the wrong picture too, it did not read from the picture.
"""

import argparse
import re
from collections import Counter

import torch

import stdec
from stdec.api import encode, resolve_model_path
from stdec.decoding.config import DecodeConfig
from stdec.tasks import evaluate, get_task
from stdec.tasks.base import format_prompt
from stdec.tasks.lengths import read_gen_lengths

CLAIM = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
TRUE = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
        "/": lambda a, b: a // b if b and a % b == 0 else None}


def kind(task: str, problem) -> str:
    meta = problem.meta
    if task == "gsm":
        return meta["template"]
    if task == "code":
        return meta["family"]
    if task == "lists":
        items = problem.prompt.rsplit("[", 1)[1]  # the input list, whatever the answer's layout
        return f"{meta['op']} {'numbers' if items[:1].isdigit() else 'words'}"
    if task == "vision":
        scene = meta["scene"]
        n = len(scene.get("objects", ()))
        where = "bars" if scene["type"] == "bars" else f"{n} object" + "s" * (n != 1)
        return f"{meta['kind']} ({where})"
    return task


def claims(texts: list[str]) -> tuple[Counter, Counter]:
    """(all, right): the "a op b = r" lines the texts write, counted by operator."""
    seen, right = Counter(), Counter()
    for text in texts:
        for a, op, b, r in CLAIM.findall(text):
            seen[op] += 1
            right[op] += TRUE[op](int(a), int(b)) == int(r)
    return seen, right


def tokens_over(spans: list[tuple[int, int]], a: int, b: int) -> list[int]:
    """The tokens (by their character spans) that overlap the characters a..b."""
    return [i for i, (s, e) in enumerate(spans) if s < b and e > a and e > s]


@torch.no_grad()
def copy_probe(model, tokenizer, problems) -> dict[tuple[str, str], list[int]]:
    """{(operator, "alone" | "with its copies"): [right, all]} over the gold solutions."""
    mask = model.config.mask_token_id
    out: dict[tuple[str, str], list[int]] = {}
    for p in problems:
        prompt = encode(tokenizer, [format_prompt(p)], True)[0]
        enc = tokenizer(p.answer, add_special_tokens=False, return_offsets_mapping=True)
        ids, spans = enc.input_ids, enc.offset_mapping
        for m in CLAIM.finditer(p.answer):
            result = tokens_over(spans, *m.span(4))
            later = [i for c in re.finditer(rf"(?<!\d){m.group(4)}(?!\d)", p.answer)
                     if c.start() >= m.end(4) for i in tokens_over(spans, *c.span())]
            for mode, hidden in (("alone", result), ("with its copies", result + later)):
                x = torch.tensor([prompt + ids])
                x[0, [len(prompt) + i for i in hidden]] = mask
                logits = model(x)[0, len(prompt):]
                tally = out.setdefault((m.group(2), mode), [0, 0])
                tally[0] += all(logits[i].argmax().item() == ids[i] for i in result)
                tally[1] += 1
    return out


@torch.no_grad()
def fact_probe(model, tokenizer, problems) -> dict[str, list[int]]:
    """{kind: [right, right with another picture, all]}: the gold answer shown with only its
    fact (the colour, shape, place, number or bar it asks for) masked; right when the model
    gives every token of the fact back. It is asked twice: with the problem's own picture,
    and with the next problem's picture in its place. Only the gap between the two is read
    from the picture: the rest comes from the question and the words around the fact (counts
    are flattered: the noun around a masked count is singular only for one, "one circle")."""
    from stdec.tasks import problem_images
    from stdec.testbed.suites.vision import NUMBERS
    from stdec.testbed.train_vision import prompt_ids

    mask = tokenizer.mask_token_id
    out: dict[str, list[int]] = {}
    for n, p in enumerate(problems):
        fact = p.meta["gold"]
        if p.meta["kind"] == "number" and p.meta["scene"]["type"] == "shapes":
            fact = NUMBERS[int(fact)]  # shapes are counted in words, bars read in digits
        where = re.search(rf"\b{re.escape(fact)}\b", p.answer, re.IGNORECASE)
        enc = tokenizer(p.answer, add_special_tokens=False, return_offsets_mapping=True)
        hidden = tokens_over(enc.offset_mapping, *where.span())
        ids = [mask if i in hidden else t for i, t in enumerate(enc.input_ids)]
        shown = prompt_ids(tokenizer, p.prompt) + ids
        other = problems[(n + 1) % len(problems)]
        tally = out.setdefault(kind("vision", p), [0, 0, 0])
        for j, picture in enumerate((p, other)):
            embeds, x = model.embed_prompt(shown, problem_images(picture))
            logits = model(x, inputs_embeds=embeds)[0, -len(ids):]
            tally[j] += all(logits[i].argmax().item() == enc.input_ids[i] for i in hidden)
        tally[2] += 1
    return out


def vanilla_dev(model, tokenizer, task, lengths: dict, args):
    """The split's first `args.limit` problems, decoded the vanilla way; and the gen_length."""
    gen = lengths.get(task.name, {}).get("gen_length") or -(-task.gen_length // 32) * 32
    config = DecodeConfig(gen_length=gen, block_length=args.block_length, policy="fixed",
                          steps=gen, cache="dual")
    problems = task.problems(args.split)[: args.limit]
    result = evaluate(model, tokenizer, task, args.split, config, limit=args.limit)
    by_id = {p.id: p for p in problems}
    return [by_id[r.id] for r in result.records], result, gen  # problems in records' order


def print_by_kind(name: str, problems, right_or_not: list[bool], what: str = "") -> None:
    """One line a kind of problem, weakest first: the share of its problems that are right."""
    total, right = Counter(), Counter()
    for p, ok in zip(problems, right_or_not, strict=True):
        k = kind(name, p)
        total[k] += 1
        right[k] += ok
    for k in sorted(total, key=lambda k: right[k] / total[k]):
        print(f"  {k + what:28s} {100 * right[k] / total[k]:5.1f}%  ({right[k]}/{total[k]})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="testbed")
    parser.add_argument("--tasks", default="gsm,code,lists")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block-length", type=int, default=32,
                        help="1 decodes strictly left to right")
    parser.add_argument("--probe", action="store_true",
                        help="gsm: does the model compute results or copy them; vision: "
                        "does it read the picture (see above)")
    args = parser.parse_args(argv)
    if args.probe and "vision" in args.tasks.split(",") and args.limit < 2:
        parser.error(f"--probe on vision shows each problem the next one's picture, so it needs "
                     f"--limit 2 or more, not {args.limit}")
    torch.set_num_threads(args.threads)
    model, tokenizer = stdec.load(args.model)
    lengths = read_gen_lengths(resolve_model_path(args.model))
    for name in args.tasks.split(","):
        task = get_task(name)
        problems, result, gen = vanilla_dev(model, tokenizer, task, lengths, args)
        print(f"\n{name} ({args.split}, n={result.n}, gen_length {gen}): "
              f"{100 * result.accuracy:.1f}%")
        print_by_kind(name, problems, [r.correct for r in result.records])
        seen, ok = claims([r.output for r in result.records])
        for op in sorted(seen):
            print(f"  arithmetic {op}: {100 * ok[op] / seen[op]:5.1f}% right of {seen[op]} written")
        if args.probe and name == "gsm":
            probe = copy_probe(model, tokenizer, problems)
            for (op, mode), (right_, all_) in sorted(probe.items()):
                print(f"  gold solution, result of {op} masked {mode:15s} "
                      f"{100 * right_ / all_:5.1f}% given back ({right_}/{all_})")
        if args.probe and name == "vision":
            probe = fact_probe(model, tokenizer, problems)
            probe["all"] = [sum(v[i] for v in probe.values()) for i in range(3)]
            print("  gold answer, its fact masked, given back with its own picture | with "
                  "the next problem's picture")
            for k in sorted(probe, key=lambda k: (k != "all", k)):
                own, other, all_ = probe[k]
                print(f"    {k:26s} {100 * own / all_:5.1f}% ({own}/{all_}) | "
                      f"{100 * other / all_:5.1f}% ({other}/{all_})")


if __name__ == "__main__":
    main()
