"""`stdec generate | viz | bench | tune | train | random-model`: a thin command line over
the Python API."""

import argparse
import sys
import types
import typing
from dataclasses import fields

from stdec.decoding.config import CACHE_MODES, POLICY_NAMES, DecodeConfig
from stdec.errors import StdecError

__all__ = ["main"]

CHOICES = {"policy": POLICY_NAMES, "cache": CACHE_MODES}


def add_options(parser: argparse.ArgumentParser, cls, title: str):
    """One flag per field of the dataclass `cls`, with its documentation; unset flags keep
    the defaults."""
    group = parser.add_argument_group(title)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = f.type
        if isinstance(kind, types.UnionType):  # int | None -> int
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            group.add_argument(flag, type=kind, choices=CHOICES.get(f.name), default=None,
                               metavar=None if f.name in CHOICES else kind.__name__.upper(),
                               help=help_text)


def from_options(cls, args: argparse.Namespace, **defaults):
    given = {f.name: getattr(args, f.name) for f in fields(cls)}
    return cls(**{**defaults, **{k: v for k, v in given.items() if v is not None}})


def decode_config(args: argparse.Namespace, **fixed) -> DecodeConfig:
    """The options given, over the model's preset lengths (LLaDA/Dream: 256 and 32), over
    DecodeConfig's defaults; validated before any weights are read."""
    from stdec.api import resolve_model_path
    from stdec.models import read_config
    from stdec.models.presets import preset_for

    from_options(DecodeConfig, args, **fixed)  # bad options fail before the model is touched
    preset = preset_for(str(args.model), read_config(resolve_model_path(args.model)))
    lengths = dict(gen_length=preset.gen_length, block_length=preset.block_length) \
        if preset else {}
    return from_options(DecodeConfig, args, **lengths, **fixed)


def cmd_generate(args: argparse.Namespace):
    import stdec
    from stdec.api import check_prompts

    config = decode_config(args)
    check_prompts(args.prompt)
    model, tokenizer = stdec.load(args.model, dtype=args.dtype, device=args.device)
    out = stdec.generate(model, tokenizer, args.prompt, config, chat=_chat(args, tokenizer))
    s = out.stats[0]
    print(out.texts[0])
    print(f"[{config.policy}, cache {config.cache}] {s.gen_tokens} tokens, {s.nfe} forwards, "
          f"{s.tpf:.2f} tokens/forward, {s.wall_time:.3f} s, {s.tokens_per_s:.1f} tokens/s",
          file=sys.stderr)
    if out.trace is not None:
        steps = out.trace.step[0, : s.gen_tokens].tolist()
        print("commit step of each token:", " ".join(map(str, steps)), file=sys.stderr)


def cmd_random_model(args: argparse.Namespace):
    from stdec.testing import random_checkpoint

    path = random_checkpoint(args.out, seed=args.seed)
    print(f"wrote a random tiny LLaDA checkpoint with a tokenizer to {path}")


def cmd_train(args: argparse.Namespace):
    from stdec.train import TrainConfig, train

    config = from_options(TrainConfig, args)
    out = train(config, resume=args.resume)
    print(f"wrote the trained checkpoint to {out}")


def cmd_bench(args: argparse.Namespace):
    from stdec.bench import BenchConfig, run_bench

    config = BenchConfig(
        model=args.model, tasks=_csv(args.tasks), policies=tuple(args.policies),
        caches=_csv(args.cache), lengths=_csv(args.lengths),
        stop_at_eos=_eos_settings(args.eos_stop),
        split=args.split, limit=args.limit, batch_size=args.batch_size,
        block_length=args.block_length, gen_length=args.gen_length,
        long_gen_length=args.long_gen_length, seed=args.seed, out=args.out,
        device=args.device, dtype=args.dtype)
    run_bench(config, progress=not args.quiet)


def cmd_tune(args: argparse.Namespace):
    import stdec
    from stdec.api import resolve_model_path
    from stdec.bench import dist_setup, rank_device
    from stdec.tasks import get_task
    from stdec.tasks.lengths import read_gen_lengths
    from stdec.tune import parse_grid, report, tune

    grid = parse_grid(args.policy, args.grid)
    tasks = _csv(args.tasks)
    for name in tasks:
        get_task(name)
    path = resolve_model_path(args.model)
    rank, _ = dist_setup()  # under torchrun/accelerate, rank 0 alone prints and writes
    model, tokenizer = stdec.load(path, dtype=args.dtype, device=rank_device(args.device))
    result = tune(model, tokenizer, args.policy, grid, list(tasks), cache=args.cache,
                  limit=args.limit, batch_size=args.batch_size, block_length=args.block_length,
                  tolerance=args.tolerance / 100, lengths=read_gen_lengths(path) or None,
                  progress=not args.quiet and rank == 0)
    if rank == 0:
        print(report(result, args.out))


def cmd_viz(args: argparse.Namespace):
    import stdec
    from stdec.api import check_prompts
    from stdec.viz import color_text, decode_order_plot

    config = decode_config(args, trace=True)
    check_prompts(args.prompt)
    model, tokenizer = stdec.load(args.model, dtype=args.dtype, device=args.device)
    out = stdec.generate(model, tokenizer, args.prompt, config, chat=_chat(args, tokenizer))
    s = out.stats[0]
    n = max(s.gen_tokens, 1)  # show at least one token, even an immediate EOS
    ids = out.ids[0, :n].tolist()
    steps = out.trace.step[0, :n].tolist()
    tokens = [tokenizer.decode([i]) for i in ids]
    print(color_text(tokens, steps))
    print(f"\n{s.gen_tokens} tokens in {s.nfe} steps ({s.tpf:.2f} tokens/forward); colour = "
          "commit step, blue early, red late", file=sys.stderr)
    title = f"{config.policy}, cache {config.cache}: {s.gen_tokens} tokens in {s.nfe} steps"
    decode_order_plot(tokens, steps, args.out, title)
    print(f"wrote {args.out}", file=sys.stderr)


def _chat_option(parser: argparse.ArgumentParser):
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                        help="wrap the prompt in the tokenizer's chat template (default: when it "
                        "has one, as instruct models such as the testbed and LLaDA-Instruct do)")


def _chat(args: argparse.Namespace, tokenizer) -> bool:
    if args.chat is not None:
        return args.chat
    return bool(getattr(tokenizer, "chat_template", None))


def _eos_settings(text: str) -> tuple[bool, ...]:
    values = {"on": True, "off": False}
    for v in _csv(text):
        if v not in values:
            raise StdecError(f"--eos-stop takes on, off or on,off; got {v!r}.")
    return tuple(values[v] for v in _csv(text))


def _csv(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _model_options(parser: argparse.ArgumentParser):
    parser.add_argument("--model", default="testbed",
                        help="checkpoint folder, or a bundled model name (default: testbed)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N (default: cuda if any)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: float32 on the CPU, bfloat16 on CUDA")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stdec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="decode one prompt and print the text and its stats")
    gen.add_argument("prompt", help="the prompt text")
    _chat_option(gen)
    _model_options(gen)
    add_options(gen, DecodeConfig, "decoding (DecodeConfig)")
    gen.set_defaults(run=cmd_generate)

    viz = sub.add_parser("viz", help="picture the order in which one decode commits tokens")
    viz.add_argument("prompt", help="the prompt text")
    _chat_option(viz)
    viz.add_argument("--out", default="decode_order.png", help="PNG to write")
    _model_options(viz)
    add_options(viz, DecodeConfig, "decoding (DecodeConfig)")
    viz.set_defaults(run=cmd_viz)

    from stdec.bench import BenchConfig

    d = BenchConfig()
    bench = sub.add_parser("bench", help="policies x caches x tasks: accuracy and speed")
    _model_options(bench)
    bench.add_argument("--tasks", default=",".join(d.tasks),
                       help="comma-separated testbed tasks, or real benchmarks with their data "
                       "(gsm8k=FILE, math500=FILE, humaneval[=FILE], mbpp=FILE)")
    bench.add_argument("--policies", nargs="+", default=list(d.policies), metavar="SPEC",
                       help="policy settings such as threshold:tau=0.9 stdec:tau_high=0.9,rho=0.8"
                       " fixed:k=2 (k: tokens per step); fixed:k=1 (vanilla) always runs")
    bench.add_argument("--cache", default=",".join(d.caches), help="comma-separated cache modes")
    bench.add_argument("--lengths", default=",".join(d.lengths),
                       help="standard (fits the answers) and/or long (4x the longest answer)")
    bench.add_argument("--eos-stop", default=",".join("on" if e else "off" for e in d.stop_at_eos),
                       help="EOS early stop: on, off or on,off")
    bench.add_argument("--split", default=d.split)
    bench.add_argument("--limit", type=int, default=d.limit,
                       help=f"problems per task (default {d.limit}, the first of each split; "
                       "raise it to run whole splits)")
    bench.add_argument("--batch-size", type=int, default=d.batch_size)
    bench.add_argument("--block-length", type=int, default=d.block_length)
    bench.add_argument("--gen-length", type=int, default=None,
                       help="override every task's standard generation length")
    bench.add_argument("--long-gen-length", type=int, default=None,
                       help="override every task's long generation length")
    bench.add_argument("--seed", type=int, default=d.seed)
    bench.add_argument("--out", default=d.out, help="folder for results.json/.md, pareto.png")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(run=cmd_bench)

    tune = sub.add_parser("tune", help="pick a policy's parameters on the dev split")
    tune.add_argument("policy", choices=POLICY_NAMES)
    _model_options(tune)
    tune.add_argument("--grid", nargs="+", metavar="KEY=V1,V2",
                      help="values to sweep (default: a built-in grid per policy)")
    tune.add_argument("--tasks", default=",".join(d.tasks), help="comma-separated tasks")
    tune.add_argument("--cache", default="none", choices=CACHE_MODES)
    tune.add_argument("--limit", type=int, default=None, help="dev problems per task")
    tune.add_argument("--batch-size", type=int, default=d.batch_size)
    tune.add_argument("--block-length", type=int, default=d.block_length)
    tune.add_argument("--tolerance", type=float, default=1.0,
                      help="accuracy points below vanilla that a setting may lose (default 1)")
    tune.add_argument("--out", default=None, help="JSON file for the sweep")
    tune.add_argument("--quiet", action="store_true", help="no progress bar")
    tune.set_defaults(run=cmd_tune)

    trn = sub.add_parser("train", help="train the testbed dLLM with the LLaDA objective")
    trn.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                     help="continue from OUT/checkpoint when it exists (default: yes)")
    from stdec.train import TrainConfig

    add_options(trn, TrainConfig, "training (TrainConfig)")
    trn.set_defaults(run=cmd_train)

    rnd = sub.add_parser("random-model", help="write a tiny random checkpoint (for trying stdec)")
    rnd.add_argument("out", help="folder to write")
    rnd.add_argument("--seed", type=int, default=0)
    rnd.set_defaults(run=cmd_random_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except StdecError as err:
        print(f"stdec: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
