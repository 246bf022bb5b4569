"""`stdec generate | random-model`: a thin command line over the Python API."""

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


def cmd_generate(args: argparse.Namespace):
    import stdec
    from stdec.api import check_prompts

    config = from_options(DecodeConfig, args)  # validate before loading anything
    check_prompts(args.prompt)
    model, tokenizer = stdec.load(args.model, dtype=args.dtype, device=args.device)
    out = stdec.generate(model, tokenizer, args.prompt, config, chat=args.chat)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stdec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="decode one prompt and print the text and its stats")
    gen.add_argument("prompt", help="the prompt text")
    gen.add_argument("--model", default="testbed",
                     help="checkpoint folder, or a bundled model name (default: testbed)")
    gen.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")
    gen.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    gen.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                     help="default: float32 on the CPU, bfloat16 on CUDA")
    add_options(gen, DecodeConfig, "decoding (DecodeConfig)")
    gen.set_defaults(run=cmd_generate)

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
