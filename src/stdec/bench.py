"""`stdec bench`: policies x cache modes x tasks x generation lengths, on one harness.

Every cell decodes the same problems the same way: one engine run of `batch_size` slots,
a finished problem's slot taking the next problem at once. Accuracy, NFE and TPF come from
one pass over all of them. Timing is measured `repeats` times per cell, in passes that
interleave the policies (pass 1 runs every setting once, then pass 2, ...), so that noise
from the machine hits every policy alike: every pass decodes every problem (the first pass
is the accuracy pass), tokens/s and latency are the medians over the passes, the spread is
(max - min) / median, and a speedup is a ratio of medians from the same passes. The load
average, thread count and CPU model are recorded beside the figures, and the table flags
timing taken with a wide spread or on a busy machine. Writes results.json (one record a
cell, rewritten atomically after each group of cells), results.md (the table and a legend
for each column) and pareto.png, and prints the table.
"""

import json
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from stdec.decoding import registry
from stdec.decoding.config import CACHE_MODES, DecodeConfig, build, parse_value
from stdec.decoding.registry import BENCH_DEFAULT, VANILLA
from stdec.errors import StdecError
from stdec.util import (
    atomic_path,
    check_quantize,
    cpu_count,
    dist_setup,
    gather,
    git_commit,
    hardware,
    load_avg,
    rank_device,
    versions,
    write_atomic,
)

# torch, transformers and matplotlib load inside the functions that use them, so that the
# CLI validates a bench run before paying for them

__all__ = ["BenchConfig", "PolicySetting", "check_out", "parse_policy", "run_bench"]

LENGTHS = ("standard", "long")
RECORD_FIELDS = ("task", "split", "length", "gen_length", "cache", "stop_at_eos", "policy",
                 "params", "label", "n", "accuracy", "nfe", "tpf", "tokens_per_s", "latency_s",
                 "speedup_tokens_per_s", "speedup_nfe", "timed_n", "wall_s", "spread",
                 "cpu_s", "tokens_per_cpu_s", "load_avg", "timing_flag", "model", "dtype",
                 "quantize", "quantize_head", "quantize_embeddings", "hardware", "threads",
                 "cpu_count", "versions", "git_commit", "seed", "batch_size", "repeats")
RESULT_FILES = ("results.json", "results.md", "pareto.png")
WIDE_SPREAD = 0.25  # (max - min) / median of the timed passes above this: flagged


@dataclass(frozen=True)
class PolicySetting:
    """A policy and its parameters, as written on the command line: `threshold:tau=0.9`."""

    policy: str
    params: tuple[tuple[str, float | int], ...] = ()

    @property
    def label(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.params)
        return f"{self.policy}:{args}" if args else self.policy

    def config(self, gen_length: int, block_length: int, base: dict | None = None,
               **options) -> DecodeConfig:
        """The setting's DecodeConfig over `base`, the checkpoint's decoding defaults."""
        return build({"policy": self.policy, "gen_length": gen_length,
                      "block_length": block_length, **dict(self.params), **options}, base)


def parse_policy(spec: str) -> PolicySetting:
    """`name` or `name:key=value,key=value` into a validated PolicySetting, the keys being
    the rule's own options (decoding/registry.py); a rule's aliases (the paper's `halfstep`
    is `fixed:k=2`) are spelled out first."""
    for rule in registry.RULES.values():
        spec = rule.aliases.get(spec, spec)
    name, _, rest = spec.partition(":")
    rule = registry.get(name)
    kinds = {k: kind for k, (kind, *_) in registry.param_fields(rule.params).items()}
    params = []
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in kinds:
            raise StdecError(f"bad policy parameter {item!r} in {spec!r}; write {name}:key=value "
                             f"with key among {', '.join(kinds)}.")
        try:
            params.append((key, parse_value(key, value, kinds[key])))
        except StdecError:
            raise StdecError(f"{key} in {spec!r} must be a number, got {value!r}.") from None
    build({"policy": name, **dict(params)})  # bad values fail here, naming the option
    return PolicySetting(name, tuple(params))


def _opt(default, help: str, **flag):
    """A field with its flag's help; `flag` may rename it (flag="--cache") and give a list's
    form (form="csv": comma-separated; form="words": space-separated)."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass(frozen=True)
class BenchConfig:
    """A bench grid: rules x caches x lengths x EOS settings x tasks. `stdec bench`'s flags
    are these fields."""

    model: str = _opt("testbed", "checkpoint folder, Hugging Face Hub id, or a bundled model")
    tasks: tuple[str, ...] = _opt(
        ("gsm", "code", "lists"), "testbed tasks, or real benchmarks with their data "
        "(gsm8k=FILE, math500=FILE, humaneval[=FILE], mbpp=FILE)", form="csv")
    policies: tuple[str, ...] = _opt(
        BENCH_DEFAULT, "policy settings such as "
        "threshold:tau=0.9 stdec:tau_high=0.9,rho=0.8 fixed:k=2 (k: tokens per step); "
        f"{VANILLA} (vanilla) always runs", form="words")
    # the default grid fits 10 minutes on 2 CPU cores: without a cache, or without EOS stop
    # at the long length, vanilla decoding alone takes longer (ask for them with the options)
    caches: tuple[str, ...] = _opt(("dual",), f"cache modes among {', '.join(CACHE_MODES)}",
                                   flag="--cache", form="csv")
    lengths: tuple[str, ...] = _opt(
        LENGTHS, "standard (fits the answers) and/or long (4x the longest answer)", form="csv")
    stop_at_eos: tuple[bool, ...] = _opt((True,), "EOS early stop: on, off or on,off",
                                         flag="--eos-stop", form="csv")
    split: str = _opt("test", "which split of each task: train, dev or test")
    # the first 100 problems of each task: one pass of the default grid took 7 minutes on 2
    # CPU cores, and each of the `repeats` passes decodes every problem (the whole
    # 400-problem splits take about 4 times as long; --limit 400)
    limit: int | None = _opt(100, "problems per task, the first of each split; raise it to "
                             "run whole splits")
    batch_size: int = _opt(64, "problems decoded at once; a finished problem's place goes "
                           "to the next at once")
    block_length: int = _opt(32, "semi-autoregressive block size")
    gen_length: int | None = _opt(None, "override every task's standard generation length "
                                  "(none: fitted to each task's answers)")
    long_gen_length: int | None = _opt(None, "override every task's long generation length "
                                       "(none: 4x the longest answer)")
    seed: int = _opt(0, "seed")
    out: str = _opt("runs/bench", "folder for results.json, results.md and pareto.png; a "
                    "folder that already holds results is left alone and the run goes to "
                    "OUT-2, OUT-3, ...")
    device: str | None = _opt(None, "cpu, cuda or cuda:N (none: cuda when there is one)")
    dtype: str | None = _opt(None, "weights' type: float32, bfloat16 or float16")
    cuda_graphs: bool = _opt(True, "on CUDA, replay dual-cache block steps as graphs")
    compile: bool = _opt(False, "torch.compile the forward")
    quantize: str | None = _opt(None, "weight-only int8 or int4 for the language model's "
                                "linear layers (none: the weights' dtype)")
    quantize_head: bool = _opt(False, "with quantize, the output head too")
    quantize_embeddings: bool = _opt(False, "with quantize, the input embedding table too")
    repeats: int = _opt(3, "timed passes over the grid, interleaved across policies; tables "
                        "show the median")
    allow_unsandboxed_code: bool = _opt(False, "score code tasks without the kernel sandbox")

    def __post_init__(self):
        from stdec.tasks import SPLITS, get_task

        for name in ("tasks", "policies", "caches", "lengths", "stop_at_eos"):
            if not getattr(self, name):
                raise StdecError(f"{name} needs at least one value; got none.")
        check_quantize(self.quantize, self.quantize_head, self.quantize_embeddings)

        for cache in self.caches:
            if cache not in CACHE_MODES:
                raise StdecError(f"unknown cache {cache!r}; choose among {', '.join(CACHE_MODES)}.")
        for length in self.lengths:
            if length not in LENGTHS:
                raise StdecError(f"unknown length {length!r}; choose among {', '.join(LENGTHS)}.")
        for spec in self.tasks:
            name, _, where = spec.partition("=")
            get_task(name, **({"path": where} if where else {}))
        if Path(self.out).expanduser().is_file():
            raise StdecError(f"out {self.out!r} is a file; pass a folder for the results.")
        if self.split not in SPLITS:
            raise StdecError(f"unknown split {self.split!r}; choose among {', '.join(SPLITS)}.")
        for name in ("batch_size", "block_length", "limit", "gen_length", "long_gen_length",
                     "repeats"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise StdecError(f"{name} must be a positive integer, got {value}.")
        for setting in self.settings():  # every policy spec parses and fits a block
            setting.config(self.block_length, self.block_length)

    def settings(self) -> list[PolicySetting]:
        """The vanilla baseline first, then the asked-for settings, without repeats."""
        out = [parse_policy(VANILLA)]
        for spec in self.policies:
            setting = parse_policy(spec)
            if setting not in out:
                out.append(setting)
        return out


# ---- the harness ----

@dataclass
class CellResult:
    n: int
    correct: int
    nfe: int  # summed over problems
    gen_tokens: int
    wall: float  # seconds decoding (max over ranks)
    cpu: float = 0.0  # CPU seconds of the processes decoding (summed over ranks)


def run_cell(model, tokenizer, task, problems, config: DecodeConfig, batch_size: int,
             world: int) -> CellResult:
    """Decode this rank's problems, score them and sum the counts over ranks."""
    from stdec.tasks.evaluate import generate_problems, score_problems

    records, wall, cpu = [], 0.0, 0.0  # a rank may have no share of the problems
    if problems:
        out, wall, cpu = generate_problems(model, tokenizer, problems, config,
                                           batch_size=batch_size)
        records = score_problems(task, problems, out)
    mine = (len(records), sum(r.correct for r in records), sum(r.nfe for r in records),
            sum(r.gen_tokens for r in records), wall, cpu)
    parts = gather(mine, world)
    return CellResult(*(sum(p[i] for p in parts) for i in range(4)), max(p[4] for p in parts),
                      sum(p[5] for p in parts))


def time_pass(model, tokenizer, problems, config: DecodeConfig, batch_size: int,
              world: int) -> tuple[float, float, int]:
    """(seconds, CPU seconds, generated tokens) of one decode of every problem, as the
    accuracy pass decodes them (max seconds, summed CPU seconds and tokens over ranks)."""
    from stdec.tasks.evaluate import generate_problems

    mine = (0.0, 0.0, 0)  # a rank may have no share of the problems
    if problems:
        out, wall, cpu = generate_problems(model, tokenizer, problems, config,
                                           batch_size=batch_size)
        mine = (wall, cpu, sum(s.gen_tokens for s in out.stats))
    parts = gather(mine, world)
    return max(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


def load_tasks(specs: tuple[str, ...], unsandboxed: bool = False) -> dict:
    """{name: Task} from `name` or `name=path` specs."""
    from stdec.tasks import get_task

    out = {}
    for spec in specs:
        name, _, where = spec.partition("=")
        out[name] = get_task(name, **({"path": where} if where else {}))
        out[name].unsandboxed = unsandboxed
    return out


def task_lengths(cfg: BenchConfig, model_path: Path, tokenizer, tasks: dict) -> dict:
    """Per task, the standard and long gen_length: overrides, then what the checkpoint was
    trained for, then lengths fitted to the train and dev answers; real benchmarks use
    their task's gen_length and twice it (256 and 512, the range people use)."""
    from stdec.tasks import RealTask
    from stdec.tasks.lengths import gen_lengths, read_gen_lengths

    known = read_gen_lengths(model_path)
    for name, task in tasks.items():
        if isinstance(task, RealTask):
            known[name] = {"gen_length": task.gen_length, "long_gen_length": 2 * task.gen_length}
    missing = {name: t for name, t in tasks.items() if name not in known}
    lengths = {**known, **gen_lengths(tokenizer, missing, cfg.block_length)} if missing else known
    out = {}
    for name in tasks:
        std = cfg.gen_length or lengths[name]["gen_length"]
        long = cfg.long_gen_length or lengths[name]["long_gen_length"]
        out[name] = {"standard": std, "long": long}
    return out


def check_out(out: Path) -> Path:
    """The folder this run writes to: `out`, or, when `out` already holds results, the first
    free `out-2`, `out-3`, ... beside it (old and new results never mix). Created now, so
    that an unwritable place fails before any model work."""
    out = out.expanduser()
    candidate, i = out, 1
    while candidate.is_dir() and any((candidate / f).exists() for f in RESULT_FILES):
        i += 1
        candidate = out.with_name(f"{out.name}-{i}")
    if candidate.exists() and not candidate.is_dir():
        raise StdecError(f"--out {str(candidate)!r} is a file; pass a folder for the results.")
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=candidate):
            pass
    except OSError as e:
        raise StdecError(f"cannot write results to {str(candidate)!r} ({e.strerror}); pass a "
                         "writable --out folder.") from None
    return candidate


def run_bench(cfg: BenchConfig, *, progress: bool = True, out: Path | None = None) -> list[dict]:
    """Run the grid; returns the records (rank 0 also writes them under `out`, by default
    check_out(cfg.out))."""
    import torch

    from stdec.api import generate, load, model_defaults, resolve_model_path
    from stdec.tasks.sandbox import check_sandbox

    rank, world = dist_setup()
    tasks = load_tasks(cfg.tasks, cfg.allow_unsandboxed_code)
    if any(getattr(t, "runs_code", False) or t.name == "code" for t in tasks.values()):
        check_sandbox(cfg.allow_unsandboxed_code)
    out = out if out is not None else check_out(Path(cfg.out)) if rank == 0 else Path(cfg.out)
    device = rank_device(cfg.device)
    path = resolve_model_path(cfg.model)
    model, tokenizer = load(path, dtype=cfg.dtype, device=device, cuda_graphs=cfg.cuda_graphs,
                            compile=cfg.compile, quantize=cfg.quantize,
                            quantize_head=cfg.quantize_head,
                            quantize_embeddings=cfg.quantize_embeddings)
    lengths = task_lengths(cfg, path, tokenizer, tasks)
    for name, per in lengths.items():
        for length, value in per.items():
            if length in cfg.lengths and value + 64 > model.config.max_sequence_length:
                raise StdecError(f"the {length} gen_length of {name} ({value}) leaves no room "
                                 f"for prompts in the model's {model.config.max_sequence_length}"
                                 " positions; pass a smaller --gen-length/--long-gen-length.")
    torch.manual_seed(cfg.seed)
    # warm-up, discarded: allocator, kernel selection, tokenizer caches
    generate(model, tokenizer, ["warm up"], gen_length=cfg.block_length,
             block_length=cfg.block_length)
    env = {"model": str(cfg.model), "dtype": str(model.dtype).removeprefix("torch."),
           "quantize": cfg.quantize or "none", "quantize_head": cfg.quantize_head,
           "quantize_embeddings": cfg.quantize_embeddings,
           "hardware": hardware(model.device),
           "threads": torch.get_num_threads(), "cpu_count": cpu_count(),
           "versions": versions(), "git_commit": git_commit(), "seed": cfg.seed,
           "batch_size": cfg.batch_size, "repeats": cfg.repeats}
    settings = cfg.settings()
    groups = [(t, ln, c, eos) for t in tasks for ln in cfg.lengths for c in cfg.caches
              for eos in cfg.stop_at_eos]
    records: list[dict] = []
    bar = _progress(len(groups) * len(settings) * cfg.repeats, progress and rank == 0)
    try:
        for name, length, cache, eos in groups:
            problems = tasks[name].problems(cfg.split)[: cfg.limit][rank::world]
            gen = lengths[name][length]
            configs = [s.config(gen, cfg.block_length, model_defaults(model), cache=cache,
                                stop_at_eos=eos, seed=cfg.seed) for s in settings]
            cells = _measure_group(model, tokenizer, tasks[name], problems, configs, cfg, world,
                                   bar)
            group = []
            for setting, (r, walls, cpus, timed_tokens, load) in zip(settings, cells,
                                                                     strict=True):
                wall, cpu = statistics.median(walls), statistics.median(cpus)
                spread = (max(walls) - min(walls)) / wall if wall > 0 else 0.0
                group.append({
                    "task": name, "split": cfg.split, "length": length, "gen_length": gen,
                    "cache": cache, "stop_at_eos": eos, "policy": setting.policy,
                    "params": dict(setting.params), "label": setting.label, "n": r.n,
                    "accuracy": r.correct / r.n, "nfe": r.nfe / r.n,
                    "tpf": r.gen_tokens / r.nfe, "tokens_per_s": timed_tokens / wall,
                    "timed_n": r.n, "latency_s": wall / r.n,
                    "wall_s": walls, "spread": spread, "cpu_s": cpus,
                    "tokens_per_cpu_s": timed_tokens / cpu if cpu > 0 else 0.0,
                    "load_avg": load, **env})
            base = group[0]  # the vanilla rule, measured in the same passes
            for rec in group:
                rec["speedup_tokens_per_s"] = rec["tokens_per_s"] / base["tokens_per_s"]
                rec["speedup_nfe"] = base["nfe"] / rec["nfe"]
                rec["timing_flag"] = timing_flag(rec)
                records.append({k: rec[k] for k in RECORD_FIELDS})
            if rank == 0:  # kept current, so that a run stopped early keeps its cells
                write_json(records, out)
    except BaseException:
        if rank == 0:
            where = f"{out / 'results.json'} holds" if records else "no cell had finished;"
            print(f"\nstdec bench stopped after {len(records)} of "
                  f"{len(groups) * len(settings)} cells: {where} the finished ones.",
                  file=sys.stderr)
        raise
    finally:
        bar.close()
    if rank == 0:
        write_results(records, out)
    return records


def _measure_group(model, tokenizer, task, problems, configs, cfg: BenchConfig, world: int,
                   bar) -> list[tuple[CellResult, list[float], list[float], int, float | None]]:
    """Each setting's accuracy pass, then cfg.repeats - 1 timing passes, interleaved: every
    pass runs every setting once, in an order rotated from pass to pass, and decodes every
    problem. Returns, per setting, the accuracy pass's counts, the wall and CPU seconds of
    every pass, the generated tokens of a pass and the highest 1-minute load average seen."""
    results: list = [None] * len(configs)
    walls: list[list[float]] = [[] for _ in configs]
    cpus: list[list[float]] = [[] for _ in configs]
    tokens = [0] * len(configs)
    loads: list[list[float]] = [[] for _ in configs]
    for p in range(cfg.repeats):
        order = list(range(len(configs)))
        order = order[p % len(order):] + order[: p % len(order)]
        for i in order:
            if p == 0:  # the accuracy pass is the first timing
                results[i] = run_cell(model, tokenizer, task, problems, configs[i],
                                      cfg.batch_size, world)
                wall, cpu, tok = results[i].wall, results[i].cpu, results[i].gen_tokens
            else:
                wall, cpu, tok = time_pass(model, tokenizer, problems, configs[i],
                                           cfg.batch_size, world)
            walls[i].append(wall)
            cpus[i].append(cpu)
            tokens[i] = tok
            la = load_avg()
            if la is not None:
                loads[i].append(la)
            bar.update(1)
    return [(results[i], walls[i], cpus[i], tokens[i], max(loads[i]) if loads[i] else None)
            for i in range(len(configs))]


def timing_flag(rec: dict) -> str:
    """'' when the timing can be trusted, else why not: a wide spread between the passes,
    or a machine busier than its cores."""
    why = []
    if rec["spread"] > WIDE_SPREAD:
        why.append(f"spread {100 * rec['spread']:.0f}%")
    if rec["load_avg"] is not None and rec["load_avg"] > rec["cpu_count"]:
        why.append(f"load {rec['load_avg']:.1f} > {rec['cpu_count']} cores")
    return ", ".join(why)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="bench passes", disable=not enabled, file=sys.stderr)


COLUMNS = (
    ("task", "the task (testbed suite or real benchmark)"),
    ("length", "generation length: standard fits the answers, long is 4x the longest; the "
     "number of tokens in brackets"),
    ("cache", "KV cache mode: none, prefix or dual (Fast-dLLM)"),
    ("eos stop", "whether a row stops once it has committed EOS"),
    ("policy", "commit rule and its parameters; fixed:k=1 is vanilla decoding"),
    ("acc", "accuracy, % of the problems scored correct"),
    ("NFE", "forward passes per problem (mean); lower is faster, hardware-independent"),
    ("TPF", "generated tokens per forward pass; higher is faster, hardware-independent"),
    ("tok/s", "generated tokens per second over every problem: the median over the timed "
     "passes"),
    ("spread", "(max - min) / median of the timed passes' wall times"),
    ("latency s", "median seconds of a timed pass over its problems: the inverse of "
     "throughput, not one problem's latency (problems decode side by side)"),
    ("speedup tok/s", "tok/s over vanilla's, medians from the same interleaved passes"),
    ("speedup NFE", "vanilla's NFE over this NFE"),
    ("timing", "blank when the timing can be trusted; else '!' and why: a spread above "
     f"{100 * WIDE_SPREAD:.0f}%, or a 1-minute load average above the core count"),
)


def table(records: list[dict]) -> str:
    head = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    rows = [head, "|" + "---|" * len(COLUMNS)]
    for r in records:
        flag = r.get("timing_flag", "")
        mark = "!" if flag else ""
        rows.append(
            f"| {r['task']} | {r['length']} ({r['gen_length']}) | {r['cache']} | "
            f"{'on' if r['stop_at_eos'] else 'off'} | {r['label']} | {100 * r['accuracy']:.1f} | "
            f"{r['nfe']:.1f} | {r['tpf']:.2f} | {r['tokens_per_s']:.1f}{mark} | "
            f"{100 * r.get('spread', 0):.0f}% | {r['latency_s']:.3f}{mark} | "
            f"{r['speedup_tokens_per_s']:.2f}x{mark} | {r['speedup_nfe']:.2f}x | "
            f"{'! ' + flag if flag else ''} |")
    flagged = sum(1 for r in records if r.get("timing_flag"))
    if flagged:
        rows.append(f"\n! {flagged} of {len(records)} cells were timed with a wide spread or on "
                    "a busy machine: their tok/s, latency and speedup tok/s are unreliable "
                    "(NFE and TPF are not affected); rerun on an idle machine.")
    return "\n".join(rows)


def legend() -> str:
    return "\n".join(f"- **{name}**: {text}." for name, text in COLUMNS)


def weights(rec: dict) -> str:
    """How a record's model held its weights: its dtype, and the quantize mode if any."""
    mode = rec.get("quantize", "none")
    if mode == "none":
        return rec.get("dtype", "?")
    also = [part for key, part in (("quantize_head", "the output head"),
                                   ("quantize_embeddings", "the input embeddings"))
            if rec.get(key)]
    return f"{rec.get('dtype', '?')}, linear layers {mode}" + \
        (f" with {' and '.join(also)}" if also else "")


def write_json(records: list[dict], out: Path):
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.json", (json.dumps(records, indent=1) + "\n").encode())


def write_results(records: list[dict], out: Path):
    from stdec.viz import pareto_plot

    write_json(records, out)
    first = records[0]
    load = [r["load_avg"] for r in records if r.get("load_avg") is not None]
    busy = f"; load average up to {max(load):.1f} on {first['cpu_count']} cores" if load else ""
    md = (f"# stdec bench\n\nmodel `{first['model']}` ({weights(first)}) on "
          f"{first['hardware']}; "
          f"{first['threads']} threads{busy}; versions {first['versions']}; commit "
          f"{first['git_commit'][:12]}; seed {first['seed']}; batch {first['batch_size']}; "
          f"split {first['split']}; {first['repeats']} timed passes per cell, interleaved "
          f"across policies.\n\n{table(records)}\n\n## Columns\n\n{legend()}\n")
    write_atomic(out / "results.md", md.encode())
    with atomic_path(out / "pareto.png") as tmp:
        pareto_plot(records, tmp)
    print(table(records))
    print(f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'pareto.png'}")
