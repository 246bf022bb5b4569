"""`stdec generate | viz | bench | tune | train | random-model`: a thin command line over
the Python API."""

import argparse
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields
from pathlib import Path

from stdec.decoding.config import CACHE_MODES, IMAGE_MODES, DecodeConfig
from stdec.errors import StdecError
from stdec.util import QUANT_MODES, check_quantize

# torch, transformers and matplotlib are imported inside the commands that use them, so that
# --help and refused options answer at once

__all__ = ["build_parser", "main"]

CODE_TASKS = ("code", "humaneval", "mbpp")  # scored by running model-written code


class Parser(argparse.ArgumentParser):
    """argparse with errors as one sentence (no usage dump), exit status 2."""

    def error(self, message: str):
        message = message[:1].lower() + message[1:] if message else "bad arguments"
        if "invalid choice" in message:  # "argument --x: invalid choice: 'y' (choose from ...)"
            message = message.replace(" (choose from", "; choose from").rstrip(")")
        self.exit(2, f"{self.prog}: error: {message.rstrip('.')} (see `{self.prog} --help`).\n")


def add_options(parser: argparse.ArgumentParser, cls, title: str):
    """One flag per field of the dataclass `cls` (or a list of its fields), with its
    documentation; unset flags keep the defaults."""
    group = parser.add_argument_group(title)
    for f in (cls if isinstance(cls, list) else fields(cls)):
        _add_flag(group, f.name, field_kind(f), f.default, f.metadata.get("help", ""),
                  f.metadata.get("flag"), f.metadata.get("form"))


def field_kind(f) -> type:
    """A dataclass field's type as a flag reads it: int, float, str or bool."""
    kind = f.type
    if isinstance(kind, str):  # postponed annotation: "int | None"
        kind = {"int": int, "float": float, "str": str, "bool": bool}.get(
            kind.split("|")[0].strip(), str)
    if isinstance(kind, types.UnionType):  # int | None -> int
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    if typing.get_origin(kind) is tuple:  # tuple[str, ...] -> str: a list's items
        kind = typing.get_args(kind)[0]
    return kind


def add_decode_options(parser: argparse.ArgumentParser, title: str):
    """The shared decoding options, then one group per registered rule with its own."""
    from stdec.decoding import registry

    shared = parser.add_argument_group(
        title, "a default shown is the code's; a known checkpoint's preset and the "
        "decoding_defaults.json in its folder take its place")
    for name, (kind, default, help_text) in DecodeConfig.shared_fields().items():
        # a list of ids stays text here: build() reads it as the option's type
        _add_flag(shared, name, str if typing.get_origin(kind) is tuple else kind, default,
                  help_text)
    seen = set(DecodeConfig.shared_fields())
    for rule in registry.RULES.values():
        group = parser.add_argument_group(f"--policy {rule.name}")
        for name, (kind, default, help_text, _) in registry.param_fields(rule.params).items():
            if name not in seen:  # two rules may share an option
                _add_flag(group, name, kind, default, help_text)
                seen.add(name)


def decode_option_names(args: argparse.Namespace) -> dict:
    """The decoding options given on the command line (flags left unset are None)."""
    names = [*DecodeConfig.shared_fields(), *DecodeConfig.option_help()]
    return {n: getattr(args, n) for n in dict.fromkeys(names)
            if getattr(args, n, None) is not None}


def _add_flag(group, name: str, kind: type, default, help_text: str, flag: str | None = None,
              form: str | None = None):
    """One option's flag, `--name` unless `flag` says otherwise. A list field (`form`) takes
    comma-separated values ("csv"; on/off for booleans) or space-separated ones ("words")."""
    flag = flag or "--" + name.replace("_", "-")
    shown = "" if default is MISSING else f" (default: {_shown(default)})"
    if form is not None:
        words = form == "words"
        shown = f" (default: {(' ' if words else ',').join(map(_shown, default))})"
        convert = _words if words else _csv_of(flag, kind)
        group.add_argument(flag, dest=name, nargs="+" if words else None, default=None,
                           type=str if words else convert, metavar="SPEC" if words else "LIST",
                           help=f"{help_text}{shown}")
        return
    if field_kind_is_bool(kind):  # bool, or bool | None
        group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{help_text}{shown}")
        return
    choices = choices_of(name)
    group.add_argument(flag, dest=name, type=_typed(kind, flag), choices=choices, default=None,
                       metavar=None if choices else kind.__name__.upper(),
                       help=f"{help_text}{shown}")


class Refused(Exception):
    """A flag's value refused in one sentence while parsing. Not a ValueError, which
    argparse would replace with its own 'invalid value' message."""


def _csv_of(flag: str, kind: type) -> Callable[[str], tuple]:
    values = {"on": True, "off": False} if field_kind_is_bool(kind) else None

    def convert(text: str) -> tuple:
        try:
            items = csv_list(text, flag, values)
        except StdecError as err:
            raise Refused(str(err)) from None
        return tuple(values[v] for v in items) if values else items
    return convert


def field_kind_is_bool(kind) -> bool:
    return kind is bool or typing.get_args(kind)[:1] == (bool,)


def _words(text: str) -> str:
    return text.strip()


def choices_of(name: str) -> tuple[str, ...] | None:
    if name == "policy":
        from stdec.decoding import registry

        return registry.names()
    return {"cache": CACHE_MODES, "image_mode": IMAGE_MODES}.get(name)


def _shown(value) -> str:
    if value == ():
        return "none"
    return {True: "on", False: "off", None: "none"}.get(value, str(value)) \
        if isinstance(value, bool | None) else str(value)


def _typed(kind: type, flag: str) -> Callable[[str], object]:
    """A converter whose error names the flag and the expected kind in one sentence."""
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            what = {int: "an integer", float: "a number"}.get(kind, "a value")
            raise argparse.ArgumentTypeError(f"{flag} takes {what}, got {text!r}") from None
    convert.__name__ = kind.__name__
    return convert


def from_options(cls, args: argparse.Namespace, **defaults):
    """`cls` from the flags given (a space-separated list becomes a tuple of its words)."""
    given = {f.name: getattr(args, f.name, None) for f in fields(cls)}
    given = {k: tuple(w for w in v if w) if isinstance(v, list) else v
             for k, v in given.items() if v is not None}
    return cls(**{**defaults, **given})


def decode_config(args: argparse.Namespace, **fixed) -> DecodeConfig:
    """The options given, over the checkpoint's decoding defaults (its preset, then its
    folder's decoding_defaults.json), over DecodeConfig's; validated before any weights are
    read."""
    from stdec.decoding.config import build, check_options

    options = {**decode_option_names(args), **fixed}
    check_options(options.get("policy"), options)  # before torch loads
    from stdec.api import resolve_model_path
    from stdec.decoding.defaults import checkpoint_defaults
    from stdec.models import read_config

    path = resolve_model_path(args.model)
    defaults = checkpoint_defaults(args.model, path, read_config(path))
    return build(options, defaults)


def decode_defaults(args: argparse.Namespace):
    """The checkpoint's decoding defaults (every rule's setting) with the options given on
    the command line over them: what a server lays each request's options over."""
    from stdec.decoding.config import check_options

    options = decode_option_names(args)
    check_options(options.get("policy"), options)  # before torch loads
    from stdec.api import resolve_model_path
    from stdec.decoding.defaults import checkpoint_defaults
    from stdec.models import read_config

    path = resolve_model_path(args.model)
    defaults = checkpoint_defaults(args.model, path, read_config(path))
    return defaults.layered(options, "the server's command line")


# ---- checks that run before anything heavy is imported ----

def check_ray(replicas: int):
    """`--replicas N` runs on Ray Serve, an optional extra: refuse before the model loads."""
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        raise StdecError(f"--replicas {replicas} runs the replicas on Ray Serve, which is not "
                         "installed here; pip install 'stdec[ray]'.") from None


def check_prompt(text: str) -> str:
    """A prompt from the shell, or from standard input when it is `-`: UTF-8 (bytes that are
    not arrive as surrogates), not blank."""
    if text == "-":
        text = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start].encode("utf-8", "surrogateescape")
        raise StdecError(f"the prompt is not valid UTF-8 (byte 0x{bad.hex()} at character "
                         f"{e.start}); pass UTF-8 text.") from None
    if not text.strip():
        raise StdecError("the prompt is empty; give some text to decode.")
    return text


def check_model(model: str) -> str:
    """A local checkpoint folder, a Hub id (owner/name) or a bundled name must exist."""
    path = Path(model).expanduser()
    if path.is_file():
        raise StdecError(f"--model {model!r} is a file; pass the checkpoint folder that holds "
                         "it (config.json, *.safetensors, tokenizer files).")
    # owner/name as presets.is_hub_id spells it (importing stdec.models would load torch)
    hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model) is not None
    # the bundled names of api.BUNDLED, written out for the same reason
    if not path.exists() and model not in ("testbed", "testbed-vision") and not hub_id:
        raise StdecError(f"--model {model!r} is not a folder, a Hugging Face Hub id "
                         "(owner/name), testbed or testbed-vision; pass a checkpoint folder.")
    return model


def check_new_file(path: str, flag: str, suffixes: tuple[str, ...], *,
                   overwrite: bool = True) -> Path:
    """`path` can be written as a new file: a known extension, an existing writable folder,
    not a folder itself (and, unless `overwrite`, not there yet)."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise StdecError(f"{flag} {path!r} must end in {' or '.join(suffixes)}.")
    if p.is_dir():
        raise StdecError(f"{flag} {path!r} is a folder; pass a file name such as "
                         f"{p / ('out' + suffixes[0])}.")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise StdecError(f"{flag} {path!r}: the folder {str(folder)!r} does not exist; create "
                         "it first, or pick another path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StdecError(f"{flag} {path!r}: the folder {str(folder)!r} is not writable.")
    if not overwrite and p.exists():
        raise StdecError(f"{flag} {path!r} already exists; pass another path or move it away, "
                         "so that no result is overwritten.")
    return p


def check_empty_folder(path: str, flag: str) -> Path:
    """A folder to create, or an existing empty one."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise StdecError(f"{flag} {path!r} is a file; pass a folder.")
    if p.is_dir() and any(p.iterdir()):
        raise StdecError(f"{flag} {path!r} is not empty; pass a new or empty folder, so that "
                         "nothing in it is overwritten.")
    _check_creatable(p, flag)
    return p


def _check_creatable(p: Path, flag: str):
    existing = p
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise StdecError(f"{flag} {str(p)!r}: {str(existing)!r} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StdecError(f"{flag} {str(p)!r}: the folder {str(existing)!r} is not writable.")


def csv_list(text: str, flag: str, valid: Iterable[str] | None = None) -> tuple[str, ...]:
    """A comma-separated list with at least one item; each among `valid` when given."""
    items = tuple(v.strip() for v in text.split(",") if v.strip())
    if not items:
        raise StdecError(f"{flag} needs at least one value, got {text!r}.")
    if valid is not None:
        valid = tuple(valid)
        for v in items:
            if v not in valid:
                raise StdecError(f"{flag} got {v!r}; choose among {', '.join(valid)}.")
    if len(set(items)) != len(items):
        raise StdecError(f"{flag} names a value twice in {text!r}.")
    return items


def check_tasks(text: str, flag: str = "--tasks") -> tuple[str, ...]:
    from stdec.tasks import get_task

    specs = csv_list(text, flag)
    for spec in specs:
        name, _, where = spec.partition("=")
        get_task(name.strip(), **({"path": where} if where else {}))
    return specs


def image_task_names() -> tuple[str, ...]:
    from stdec.tasks import VISION_BENCHMARKS, VISION_TASKS

    return VISION_TASKS + tuple(VISION_BENCHMARKS)


def check_sandbox_for(specs: Iterable[str], allowed: bool):
    """Refuse (one sentence) before any model work when a task runs model-written code and
    the kernel sandbox cannot be set up, unless --allow-unsandboxed-code."""
    if any(s.partition("=")[0] in CODE_TASKS for s in specs):
        from stdec.tasks.sandbox import check_sandbox

        check_sandbox(allowed)


# ---- the commands ----

def check_images(args: argparse.Namespace) -> list:
    """--image files, read and checked, and a model that can see them: before the weights load."""
    if not args.image:
        return []
    from stdec.models.images import load_images

    images = load_images(args.image)
    require_vision_model(args.model, "--image was given")
    return images


def require_vision_model(model: str, why: str):
    """Refuse, from config.json alone, image work for a text-only checkpoint."""
    from stdec.api import resolve_model_path
    from stdec.models import model_class, read_config
    from stdec.models.images import sees_images

    path = resolve_model_path(model)
    if not sees_images(model_class(read_config(path), path)):
        raise StdecError(f"{why}, but --model {model!r} is a text-only model; use a "
                         "vision-language checkpoint (LLaDA-V or LaViDa, e.g. testbed-vision).")


def load_options(args: argparse.Namespace, device: str | None = None) -> dict:
    """stdec.load's keywords from the model flags (_model_options); `device` overrides
    --device (a rank's own GPU)."""
    return dict(dtype=args.dtype, device=device or args.device, cuda_graphs=args.cuda_graphs,
                compile=args.compile, quantize=args.quantize, quantize_head=args.quantize_head,
                quantize_embeddings=args.quantize_embeddings)


def decode_one(args: argparse.Namespace, check_first: Callable[[], object] = lambda: None,
               **fixed):
    """generate and viz: the prompt, model and options checked (and `check_first`, a
    command's own check, before any model work), then the model loaded and the prompt
    decoded. Returns (the Generation, its DecodeConfig, chat, the tokenizer)."""
    import stdec

    args.prompt = check_prompt(args.prompt)
    check_model(args.model)
    check_quantize(args.quantize, args.quantize_head, args.quantize_embeddings)
    check_first()
    config = decode_config(args, **fixed)
    images = check_images(args)
    model, tokenizer = stdec.load(args.model, **load_options(args))
    chat = _chat(args, tokenizer)
    out = stdec.generate(model, tokenizer, args.prompt, config, chat=chat, images=images,
                         system=args.system)
    return out, config, chat, tokenizer


def cmd_generate(args: argparse.Namespace):
    out, config, chat, tokenizer = decode_one(args)
    s = out.stats[0]
    if args.json:  # one object: the text, the stats and the settings it decoded with
        import json
        from dataclasses import asdict

        record = {"text": out.texts[0], "stats": asdict(s), "settings": config.options(),
                  "chat": chat}
        if out.trace is not None:
            record["commit_steps"] = out.trace.step[0, : s.gen_tokens].tolist()
        print(json.dumps(record))
        return
    print(out.texts[0])
    print(f"[{config.policy}, cache {config.cache}] {s.gen_tokens} tokens, {s.nfe} forwards, "
          f"{s.tpf:.2f} tokens/forward, {s.wall_time:.3f} s, {s.tokens_per_s:.1f} tokens/s",
          file=sys.stderr)
    _explain_empty(out.texts[0], chat, tokenizer)
    if out.trace is not None:
        steps = out.trace.step[0, : s.gen_tokens].tolist()
        print("commit step of each token:", " ".join(map(str, steps)), file=sys.stderr)


def cmd_serve(args: argparse.Namespace):
    check_model(args.model)
    if args.replicas > 1:
        check_ray(args.replicas)
    check_quantize(args.quantize, args.quantize_head, args.quantize_embeddings)
    config = decode_defaults(args)
    from stdec.api import load
    from stdec.serve import ServerConfig, bind, serve

    name = args.served_model_name or Path(args.model).name
    if args.image_dir is not None and not Path(args.image_dir).is_dir():
        raise StdecError(f"--image-dir {args.image_dir!r} is not a folder; give the folder "
                         "whose images clients may name by path.")
    server = ServerConfig(name=name, defaults=config, host=args.host, port=args.port,
                          max_batch=args.max_batch, max_queue=args.max_queue,
                          timeout=args.timeout, drain=args.drain, image_dir=args.image_dir,
                          max_prompt_tokens=args.max_prompt_tokens,
                          api_key=args.api_key or os.environ.get("STDEC_API_KEY") or None)
    sock = bind(server.host, server.port)  # a port in use is refused before the model loads
    if args.replicas > 1:  # each replica loads the model itself; Ray's proxy takes the port
        sock.close()
        from stdec.serve.replicas import serve_replicas

        serve_replicas(args.model, load_options(args), server, args.replicas,
                       device=args.device)
        return
    try:
        model, tokenizer = load(args.model, **load_options(args))
        print(f"serving {name!r} on http://{args.host}:{args.port}/v1 ({args.max_batch} "
              f"slots{', API key required' if server.api_key else ''})", file=sys.stderr)
        serve(model, tokenizer, server, sock=sock)
    finally:
        sock.close()


def _explain_empty(text: str, chat: bool, tokenizer):
    if text.strip():
        return
    if not chat and getattr(tokenizer, "chat_template", None):
        print("note: the answer is empty: this is an instruct model (its tokenizer has a chat "
              "template), and --no-chat gave it the bare prompt, so it ended at once; drop "
              "--no-chat.", file=sys.stderr)
    else:
        print("note: the answer is empty: the model committed its end token first; try a "
              "longer --gen-length or another prompt.", file=sys.stderr)


def cmd_random_model(args: argparse.Namespace):
    check_empty_folder(args.out, "random-model OUT")
    from stdec.testing import random_checkpoint

    path = random_checkpoint(args.out, seed=args.seed)
    print(f"wrote a random tiny LLaDA checkpoint with a tokenizer to {path}")


def cmd_train(args: argparse.Namespace):
    vision = "vision" in csv_list(args.tasks or "gsm", "--tasks")
    out = Path(args.out or f"runs/testbed{'-vision' * vision}").expanduser()
    if out.exists() and not out.is_dir():
        raise StdecError(f"--out {str(out)!r} is a file; pass a folder for the checkpoints.")
    _check_creatable(out, "--out")
    if vision:
        return train_vision_testbed(args)
    given = [f"--{f.name.replace('_', '-')}" for f in vision_only_fields()
             if getattr(args, f.name) is not None]
    if given:
        raise StdecError(f"{given[0]} sets the vision testbed's recipe; add --tasks vision, or "
                         "leave it out.")
    from stdec.testbed.train import TrainConfig, train

    config = from_options(TrainConfig, args)
    out = train(config, resume=args.resume)
    print(f"wrote the trained checkpoint to {out}")


def init_is_vision(init: str) -> bool:
    """Whether --init names a vision-language checkpoint (its tower comes with it)."""
    from stdec.api import resolve_model_path
    from stdec.models import LLaDAVModel, model_class, read_config

    path = resolve_model_path(init)
    return model_class(read_config(path), path) is LLaDAVModel


def train_vision_testbed(args: argparse.Namespace):
    """`stdec train --tasks vision`: the vision testbed, a small LLaDA-V, on the `vision` task's
    pictures. Options the text recipe has and this one does not are refused, not ignored."""
    if args.tasks.strip() != "vision":
        raise StdecError(f"--tasks {args.tasks!r}: vision trains a model of its own (a "
                         "LLaDA-V); train it alone with --tasks vision.")
    from stdec.testbed.config import TrainConfig

    unused = [f"--{f.name.replace('_', '-')}" for f in fields(TrainConfig)
              if f.name not in vision_shared() and getattr(args, f.name) is not None]
    if unused:
        raise StdecError(f"{unused[0]} is not an option of the vision recipe; leave it out "
                         "with --tasks vision.")
    shaped = [f"--{name.replace('_', '-')}" for name in ("d_model", "n_layers", "n_heads",
              "mlp_hidden_size", "vocab_size") if getattr(args, name) is not None]
    if args.init and shaped:
        raise StdecError(f"{shaped[0]} comes from --init's checkpoint ({args.init!r}); leave "
                         "it out.")
    towered = [f"--{name.replace('_', '-')}" for name in ("vision_hidden", "vision_layers",
               "patch_size") if getattr(args, name) is not None]
    if args.init and towered and init_is_vision(args.init):
        raise StdecError(f"{towered[0]} comes from --init's vision checkpoint ({args.init!r}); "
                         "leave it out.")
    out = args.out or "runs/testbed-vision"
    if not args.resume and (Path(out) / "checkpoint").exists():
        raise StdecError(f"--no-resume: {out!r} already holds a checkpoint; pass a new --out "
                         "(results on disk are never overwritten).")
    from stdec.testbed.train_vision import VisionTrainConfig, train_vision

    config = from_options(VisionTrainConfig, args)
    out = train_vision(config, log_to=lambda s: print(s, flush=True))
    print(f"wrote the trained checkpoint to {out}")


def cmd_bench(args: argparse.Namespace):
    from stdec.bench import BenchConfig, check_out, run_bench

    check_model(args.model)
    config = from_options(BenchConfig, args)  # every option checked: tasks, specs, caches
    seeing = [t for t in config.tasks if t.partition("=")[0] in image_task_names()]
    if seeing:
        require_vision_model(args.model, f"--tasks {seeing[0]} asks questions about images")
    check_sandbox_for(config.tasks, args.allow_unsandboxed_code)
    out = check_out(Path(config.out))
    if out != Path(config.out).expanduser():
        print(f"{config.out} already holds results; this run writes to {out}", file=sys.stderr)
    if args.table == "paper":  # the paper's rows and columns; --policies/--cache unused
        from stdec.paper import run_paper

        print(run_paper(config, progress=not args.quiet, out=out))
        return
    run_bench(config, progress=not args.quiet, out=out)


def cmd_tune(args: argparse.Namespace):
    import stdec
    from stdec.tasks.lengths import read_gen_lengths
    from stdec.tune import parse_grid, report, tune
    from stdec.util import dist_setup, rank_device

    check_model(args.model)
    check_quantize(args.quantize, args.quantize_head, args.quantize_embeddings)
    if args.out:
        check_new_file(args.out, "--out", (".json",), overwrite=False)
    for name, label in ((args.limit, "--limit"), (args.batch_size, "--batch-size"),
                        (args.block_length, "--block-length")):
        if name is not None and name < 1:
            raise StdecError(f"{label} must be a positive integer, got {name}.")
    if not 0 <= args.tolerance <= 100:
        raise StdecError(f"--tolerance is in accuracy points, 0 to 100; got {args.tolerance}.")
    grid = parse_grid(args.policy, args.grid)
    tasks = check_tasks(args.tasks)
    if any("=" in t for t in tasks):
        raise StdecError("tune reads the dev split of the testbed tasks; pass task names "
                         "without =FILE.")
    check_sandbox_for(tasks, args.allow_unsandboxed_code)
    from stdec.api import resolve_model_path

    path = resolve_model_path(args.model)
    rank, _ = dist_setup()  # under torchrun/accelerate, rank 0 alone prints and writes
    model, tokenizer = stdec.load(path, **load_options(args, rank_device(args.device)))
    result = tune(model, tokenizer, args.policy, grid, list(tasks), cache=args.cache,
                  limit=args.limit, batch_size=args.batch_size, block_length=args.block_length,
                  tolerance=args.tolerance / 100, lengths=read_gen_lengths(path) or None,
                  progress=not args.quiet and rank == 0,
                  unsandboxed=args.allow_unsandboxed_code)
    if rank == 0:
        print(report(result, args.out))
        if args.out:
            print(f"wrote {args.out}", file=sys.stderr)


def cmd_viz(args: argparse.Namespace):
    out, config, chat, tokenizer = decode_one(
        args, lambda: check_new_file(args.out, "--out", (".png", ".svg", ".pdf")), trace=True)
    out_path = Path(args.out).expanduser()
    from stdec.viz import color_text, decode_order_plot, use_colour

    s = out.stats[0]
    n = max(s.gen_tokens, 1)  # show at least one token, even an immediate EOS
    ids = out.ids[0, :n].tolist()
    steps = out.trace.step[0, :n].tolist()
    tokens = [tokenizer.decode([i]) for i in ids]
    colour = use_colour(sys.stdout)
    print(color_text(tokens, steps) if colour else "".join(tokens))
    legend = "colour = commit step, blue early, red late" if colour else \
        "no colour: stdout is not a terminal, or NO_COLOR is set"
    print(f"\n{s.gen_tokens} tokens in {s.nfe} steps ({s.tpf:.2f} tokens/forward); {legend}",
          file=sys.stderr)
    _explain_empty(out.texts[0], chat, tokenizer)
    title = f"{config.policy}, cache {config.cache}: {s.gen_tokens} tokens in {s.nfe} steps"
    decode_order_plot(tokens, steps, out_path, title)
    print(f"wrote {out_path}", file=sys.stderr)


def _chat(args: argparse.Namespace, tokenizer) -> bool:
    if args.chat is not None:
        return args.chat
    return bool(getattr(tokenizer, "chat_template", None))


def _eos_settings(text: str) -> tuple[bool, ...]:
    values = {"on": True, "off": False}
    return tuple(values[v] for v in csv_list(text, "--eos-stop", values))


def _policies(specs: list[str]) -> tuple[str, ...]:
    from stdec.bench import parse_policy

    specs = [s.strip() for s in specs if s.strip()]
    if not specs:
        raise StdecError("--policies needs at least one policy setting, e.g. stdec.")
    for spec in specs:
        parse_policy(spec)
    return tuple(specs)


# ---- the parser: each command's options are built only when that command runs ----

# the options every model-loading command shares (_model_options), and the sandbox's
MODEL_FIELDS = ("model", "device", "dtype", "cuda_graphs", "compile", "quantize",
                "quantize_head", "quantize_embeddings", "allow_unsandboxed_code")

def _model_options(parser: argparse.ArgumentParser):
    parser.add_argument("--model", default="testbed",
                        help="checkpoint folder, Hugging Face Hub id, or a bundled model name "
                        "(default: testbed)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda or cuda:N (default: cuda when there is one)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="weights' type (default: float32 on the CPU, bfloat16 on CUDA)")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                        help="on CUDA, run every block step eagerly instead of replaying the "
                        "dual-cache steps as CUDA graphs (same results; for debugging)")
    parser.add_argument("--compile", action="store_true",
                        help="run the model's forward through torch.compile (each kind of "
                        "step compiles on first use; see the README for when it pays)")
    parser.add_argument("--quantize", choices=QUANT_MODES, default=None,
                        help="store the language model's linear layers as weight-only int8 or "
                        "int4 (torchao: pip install 'stdec[quant]'; int4 on CUDA needs "
                        "bfloat16); norms, the embeddings, the output head and a vision tower "
                        "keep --dtype (default: none, every weight in --dtype)")
    parser.add_argument("--quantize-head", action="store_true",
                        help="with --quantize, quantize the output head too (default: off)")
    parser.add_argument("--quantize-embeddings", action="store_true",
                        help="with --quantize, quantize the input embedding table too; a "
                        "lookup dequantizes only the rows it reads (default: off)")


def _chat_option(parser: argparse.ArgumentParser):
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                        help="wrap the prompt in the tokenizer's chat template (default: when it "
                        "has one, as instruct models such as the testbed and LLaDA-Instruct do)")
    parser.add_argument("--system", default=None, metavar="TEXT",
                        help="with --chat, the system message before the prompt (default: the "
                        "model's own, as LLaDA-V's and LaViDa's official templates add; \"\" for "
                        "none)")


def _image_option(parser: argparse.ArgumentParser):
    parser.add_argument("--image", action="append", default=[], metavar="PATH",
                        help="an image for the prompt (repeat for several; each goes where the "
                        "prompt says <image>, or at its front); vision-language models only")


def _sandbox_option(parser: argparse.ArgumentParser):
    parser.add_argument("--allow-unsandboxed-code", action="store_true",
                        help="score code tasks even where the kernel sandbox cannot be set up "
                        "(model-written code then runs with resource limits only; default: "
                        "refuse)")


def _positive(flag: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes a positive integer, got {text!r}") \
                from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} takes a positive integer, got {value}")
        return value
    convert.__name__ = "int"
    return convert


def _build_generate(p: argparse.ArgumentParser):
    p.add_argument("prompt", help="the prompt text (UTF-8); - reads it from standard input")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: text, stats and the effective settings")
    _image_option(p)
    _chat_option(p)
    _model_options(p)
    add_decode_options(p, "decoding (DecodeConfig)")
    p.set_defaults(run=cmd_generate)


def _build_viz(p: argparse.ArgumentParser):
    p.add_argument("prompt", help="the prompt text (UTF-8); - reads it from standard input")
    _image_option(p)
    _chat_option(p)
    p.add_argument("--out", default="decode_order.png",
                   help="picture to write: .png, .svg or .pdf (default: decode_order.png)")
    _model_options(p)
    add_decode_options(p, "decoding (DecodeConfig)")
    p.set_defaults(run=cmd_viz)


def _bench_defaults() -> dict:
    from stdec.bench import BenchConfig

    return {f.name: f.default for f in fields(BenchConfig)}


def _build_bench(p: argparse.ArgumentParser):
    from stdec.bench import BenchConfig

    _model_options(p)
    add_options(p, [f for f in fields(BenchConfig) if f.name not in MODEL_FIELDS],
                "the grid (BenchConfig)")
    p.add_argument("--table", choices=("grid", "paper"), default="grid",
                   help="grid: policies x caches; paper: the STDec paper's table (each rule's "
                   "paper rows: TPS, speedup and score per task), --policies and --cache "
                   "unused (default: grid)")
    _sandbox_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_bench)


def _build_tune(p: argparse.ArgumentParser):
    d = _bench_defaults()
    p.add_argument("policy", choices=choices_of("policy"), help="the policy to tune")
    _model_options(p)
    p.add_argument("--grid", nargs="+", metavar="KEY=V1,V2",
                   help="values to sweep (default: a built-in grid per policy)")
    p.add_argument("--tasks", default=",".join(d["tasks"]),
                   help=f"comma-separated testbed tasks (default: {','.join(d['tasks'])})")
    p.add_argument("--cache", default="none", choices=CACHE_MODES,
                   help="KV cache mode (default: none)")
    p.add_argument("--limit", type=int, default=None,
                   help="dev problems per task (default: the whole dev split)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help=f"problems decoded at once, a finished one's place going to the next "
                   f"(default: {d['batch_size']})")
    p.add_argument("--block-length", type=int, default=d["block_length"],
                   help=f"semi-autoregressive block size (default: {d['block_length']})")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="accuracy points below vanilla that a setting may lose (default: 1)")
    p.add_argument("--out", default=None,
                   help="new .json file for the sweep (default: none, only printed)")
    _sandbox_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_tune)


def _build_train(p: argparse.ArgumentParser):
    from stdec.testbed.config import TrainConfig

    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from OUT/checkpoint when it exists (default: on)")
    add_options(p, TrainConfig, "training (TrainConfig)")
    vision = p.add_argument_group("the vision testbed (--tasks vision; defaults: "
                                  "VisionTrainConfig)")
    for f in vision_only_fields():
        _add_flag(vision, f.name, field_kind(f), MISSING, f"--tasks vision: {f.metadata['help']}")
    p.set_defaults(run=cmd_train)


def vision_only_fields() -> list:
    """VisionTrainConfig's fields that TrainConfig has not: the vision recipe's own options."""
    from stdec.testbed.config import TrainConfig, VisionTrainConfig

    text = {f.name for f in fields(TrainConfig)}
    return [f for f in fields(VisionTrainConfig) if f.name not in text]


def vision_shared() -> set[str]:
    """The options the two recipes share (tasks picks the recipe)."""
    from stdec.testbed.config import TrainConfig, VisionTrainConfig

    return {f.name for f in fields(TrainConfig)} & {f.name for f in fields(VisionTrainConfig)} \
        | {"tasks"}


def _build_random_model(p: argparse.ArgumentParser):
    p.add_argument("out", help="new or empty folder to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights (default: 0)")
    p.set_defaults(run=cmd_random_model)


def _build_serve(p: argparse.ArgumentParser):
    _model_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                   "127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--max-batch", type=_positive("--max-batch"), default=8,
                   help="engine slots: requests decoded together (default: 8)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests that may wait when every slot is taken; more get 429 "
                   "(default: 64)")
    p.add_argument("--max-prompt-tokens", type=_positive("--max-prompt-tokens"), default=None,
                   help="longest prompt in tokens, images included; longer ones get 413 "
                   "(default: the model's length less one)")
    p.add_argument("--api-key", default=None,
                   help="the key clients must send as `Authorization: Bearer KEY`; 401 "
                   "without it (/health and /ready stay open) (default: $STDEC_API_KEY, "
                   "else none needed)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds a request may take, queueing included (default: 600)")
    p.add_argument("--drain", type=float, default=30.0,
                   help="seconds a shutdown lets in-flight requests finish before it cancels "
                   "them (default: 30)")
    p.add_argument("--served-model-name", default=None,
                   help="the model name clients send (default: the --model folder's name)")
    p.add_argument("--image-dir", default=None,
                   help="a folder whose images requests may name by local path, a relative one "
                   "taken inside it (default: none; images then come as data URLs only; "
                   "network URLs are never fetched)")
    p.add_argument("--replicas", type=_positive("--replicas"), default=1,
                   help="engine replicas behind the one endpoint, on Ray Serve (pip install "
                   "'stdec[ray]'): one GPU each, or a share of the CPU threads; joins a "
                   "running Ray cluster (RAY_ADDRESS, or one `ray start` began on this machine), "
                   "else starts a local one (default: 1, no Ray)")
    add_decode_options(p, "decoding defaults of requests (DecodeConfig)")
    p.set_defaults(run=cmd_serve)


# name -> (one-line help, builder); a builder may import what its options need
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "generate": ("decode one prompt and print the text and its stats", _build_generate),
    "viz": ("picture the order in which one decode commits tokens", _build_viz),
    "bench": ("policies x caches x tasks: accuracy and speed", _build_bench),
    "tune": ("pick a policy's parameters on the dev split", _build_tune),
    "train": ("train the testbed dLLM with the LLaDA objective", _build_train),
    "random-model": ("write a tiny random checkpoint (for trying stdec)", _build_random_model),
    "serve": ("an OpenAI-compatible HTTP server with continuous batching", _build_serve),
}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only `commands` (default: all) get their options."""
    wanted = set(COMMANDS if commands is None else commands)
    from stdec import __version__

    parser = Parser(prog="stdec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stdec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")
    for name, (help_text, build) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name in wanted:
            build(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser([command] if command in COMMANDS else []).parse_args(argv)
        args.run(args)
    except (StdecError, Refused) as err:
        print(f"stdec: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine's answer (disk full, permission denied): no bug
        where = f" ({err.filename})" if err.filename else ""
        print(f"stdec: error: {err.strerror or err}{where}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stdec: interrupted.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
