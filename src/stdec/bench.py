"""`stdec bench`: policies x cache modes x tasks x generation lengths, on one harness.

Every cell decodes the same problems in the same batches; its speedups are ratios to the
vanilla rule (`fixed`, one token per step) measured in the same run, with the same task,
generation length, cache mode and EOS setting. Writes results.json (one record a cell),
results.md (the table) and pareto.png, and prints the table.
"""

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from stdec.decoding.config import CACHE_MODES, DecodeConfig
from stdec.errors import StdecError

__all__ = ["BenchConfig", "PolicySetting", "hardware", "parse_policy", "run_bench"]

VANILLA = "fixed:k=1"
# the parameters each policy reads; fixed takes k, tokens per step, for DecodeConfig.steps
POLICY_PARAMS = {
    "fixed": ("k",),
    "threshold": ("tau",),
    "factor": ("factor",),
    "localleap": ("leap_tau_hi", "leap_tau_lo", "leap_radius"),
    "stdec": ("tau_high", "tau_low", "sigma", "rho", "window"),
}
LENGTHS = ("standard", "long")
RECORD_FIELDS = ("task", "split", "length", "gen_length", "cache", "stop_at_eos", "policy",
                 "params", "label", "n", "accuracy", "nfe", "tpf", "tokens_per_s", "latency_s",
                 "speedup_tokens_per_s", "speedup_nfe", "model", "hardware", "versions",
                 "git_commit", "seed", "batch_size")


@dataclass(frozen=True)
class PolicySetting:
    """A policy and its parameters, as written on the command line: `threshold:tau=0.9`.

    `fixed` takes k, the tokens committed per step (steps = gen_length / k).
    """

    policy: str
    params: tuple[tuple[str, float | int], ...] = ()

    @property
    def label(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.params)
        return f"{self.policy}:{args}" if args else self.policy

    def config(self, gen_length: int, block_length: int, **options) -> DecodeConfig:
        params = dict(self.params)
        if self.policy == "fixed":
            params["steps"] = gen_length // params.pop("k", 1)
        return DecodeConfig(policy=self.policy, gen_length=gen_length,
                            block_length=block_length, **params, **options)


def parse_policy(spec: str) -> PolicySetting:
    """`name` or `name:key=value,key=value` into a validated PolicySetting."""
    name, _, rest = spec.partition(":")
    if name not in POLICY_PARAMS:
        raise StdecError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_PARAMS)}.")
    types = {f.name: f.type for f in fields(DecodeConfig)}
    params = []
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in POLICY_PARAMS[name]:
            raise StdecError(f"bad policy parameter {item!r} in {spec!r}; write {name}:key=value "
                             f"with key among {', '.join(POLICY_PARAMS[name])}.")
        kind = int if key == "k" or types[key] is int else float
        try:
            params.append((key, kind(value)))
        except ValueError:
            raise StdecError(f"{key} in {spec!r} must be a number, got {value!r}.") from None
    setting = PolicySetting(name, tuple(params))
    if name == "fixed":
        k = dict(params).get("k", 1)
        if k < 1:
            raise StdecError(f"fixed:k must be a positive number of tokens per step, in {spec!r}.")
    else:
        DecodeConfig(policy=name, **dict(params))  # unknown names and bad values fail here
    return setting


@dataclass(frozen=True)
class BenchConfig:
    model: str = "testbed"
    # testbed task names, or real benchmarks with their data: gsm8k=path/to/test.jsonl
    tasks: tuple[str, ...] = ("gsm", "code", "lists")
    policies: tuple[str, ...] = (VANILLA, "fixed:k=4", "threshold", "stdec")
    # the default grid fits 10 minutes on 2 CPU cores: without a cache, or without EOS stop
    # at the long length, vanilla decoding alone takes longer (ask for them with the options)
    caches: tuple[str, ...] = ("dual",)
    lengths: tuple[str, ...] = LENGTHS
    stop_at_eos: tuple[bool, ...] = (True,)
    split: str = "test"
    # the first 100 problems of each task: the default grid then takes 7 minutes on 2 CPU
    # cores (the whole 400-problem splits take about 4 times as long; --limit 400)
    limit: int | None = 100
    batch_size: int = 64
    block_length: int = 32
    gen_length: int | None = None  # overrides every task's standard length
    long_gen_length: int | None = None  # overrides every task's long length
    seed: int = 0
    out: str = "runs/bench"
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self):
        from stdec.tasks import SPLITS, get_task

        for cache in self.caches:
            if cache not in CACHE_MODES:
                raise StdecError(f"unknown cache {cache!r}; choose among {', '.join(CACHE_MODES)}.")
        for length in self.lengths:
            if length not in LENGTHS:
                raise StdecError(f"unknown length {length!r}; choose among {', '.join(LENGTHS)}.")
        for spec in self.tasks:
            name, _, where = spec.partition("=")
            get_task(name, **({"path": where} if where else {}))
        if self.split not in SPLITS:
            raise StdecError(f"unknown split {self.split!r}; choose among {', '.join(SPLITS)}.")
        for name in ("batch_size", "block_length", "limit", "gen_length", "long_gen_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise StdecError(f"{name} must be a positive integer, got {value}.")
        for name in ("gen_length", "long_gen_length"):
            value = getattr(self, name)
            if value is not None and value % self.block_length:
                raise StdecError(f"{name} ({value}) must be a multiple of block_length "
                                 f"({self.block_length}).")
        for setting in self.settings():  # every policy spec parses
            k = dict(setting.params).get("k", 1)
            if setting.policy == "fixed" and self.block_length % k:
                raise StdecError(f"fixed:k={k} must divide block_length ({self.block_length}) "
                                 "so that every block takes whole steps.")

    def settings(self) -> list[PolicySetting]:
        """The vanilla baseline first, then the asked-for settings, without repeats."""
        out = [parse_policy(VANILLA)]
        for spec in self.policies:
            setting = parse_policy(spec)
            if setting not in out:
                out.append(setting)
        return out


# ---- the environment, written beside every figure ----

def cpuinfo(key: str) -> str | None:
    """The first `key` line of /proc/cpuinfo ("model name", "flags"), or None off Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith(key)), None)
    except OSError:
        return None


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = cpuinfo("model name") or platform.machine()
    return f"{name} ({torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    import transformers

    import stdec

    return {"stdec": stdec.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---- data parallel: shard problems by rank, gather on rank 0 ----

def dist_setup() -> tuple[int, int]:
    """(rank, world size); starts torch.distributed when a launcher set WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), world


def rank_device(device: str | None) -> str:
    """`device`, or this process's GPU (LOCAL_RANK, set by torchrun/accelerate), or the CPU."""
    if device:
        return device
    return f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"


def gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


# ---- the harness ----

@dataclass
class CellResult:
    n: int
    correct: int
    nfe: int  # summed over problems
    gen_tokens: int
    wall: float  # seconds in generate, summed over batches (max over ranks)


def run_cell(model, tokenizer, task, problems, config: DecodeConfig, batch_size: int,
             world: int) -> CellResult:
    """Decode this rank's problems and sum the counts over ranks."""
    from stdec.tasks.evaluate import decode_problems

    records, wall = decode_problems(model, tokenizer, task, problems, config,
                                    batch_size=batch_size)
    mine = (len(records), sum(r.correct for r in records), sum(r.nfe for r in records),
            sum(r.gen_tokens for r in records), wall)
    parts = gather(mine, world)
    return CellResult(*(sum(p[i] for p in parts) for i in range(4)), max(p[4] for p in parts))


def load_tasks(specs: tuple[str, ...]) -> dict:
    """{name: Task} from `name` or `name=path` specs."""
    from stdec.tasks import get_task

    out = {}
    for spec in specs:
        name, _, where = spec.partition("=")
        out[name] = get_task(name, **({"path": where} if where else {}))
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


def run_bench(cfg: BenchConfig, *, progress: bool = True) -> list[dict]:
    """Run the grid; returns the records (rank 0 also writes them under cfg.out)."""
    import stdec
    from stdec.api import resolve_model_path

    rank, world = dist_setup()
    device = rank_device(cfg.device)
    path = resolve_model_path(cfg.model)
    model, tokenizer = stdec.load(path, dtype=cfg.dtype, device=device)
    tasks = load_tasks(cfg.tasks)
    lengths = task_lengths(cfg, path, tokenizer, tasks)
    for name, per in lengths.items():
        for length, value in per.items():
            if length in cfg.lengths and value + 64 > model.config.max_sequence_length:
                raise StdecError(f"the {length} gen_length of {name} ({value}) leaves no room "
                                 f"for prompts in the model's {model.config.max_sequence_length}"
                                 " positions; pass a smaller --gen-length/--long-gen-length.")
    torch.manual_seed(cfg.seed)
    # warm-up, discarded: allocator, kernel selection, tokenizer caches
    stdec.generate(model, tokenizer, ["warm up"], gen_length=cfg.block_length,
                   block_length=cfg.block_length)
    env = {"model": str(cfg.model), "hardware": hardware(model.device), "versions": versions(),
           "git_commit": git_commit(), "seed": cfg.seed, "batch_size": cfg.batch_size}
    settings = cfg.settings()
    cells = [(t, ln, c, eos, s) for t in tasks for ln in cfg.lengths for c in cfg.caches
             for eos in cfg.stop_at_eos for s in settings]
    records, baseline = [], {}
    bar = _progress(len(cells), progress and rank == 0)
    for name, length, cache, eos, setting in cells:
        problems = tasks[name].problems(cfg.split)[: cfg.limit][rank::world]
        gen = lengths[name][length]
        config = setting.config(gen, cfg.block_length, cache=cache, stop_at_eos=eos,
                                seed=cfg.seed)
        r = run_cell(model, tokenizer, tasks[name], problems, config, cfg.batch_size, world)
        rec = {"task": name, "split": cfg.split, "length": length, "gen_length": gen,
               "cache": cache, "stop_at_eos": eos, "policy": setting.policy,
               "params": dict(setting.params), "label": setting.label, "n": r.n,
               "accuracy": r.correct / r.n, "nfe": r.nfe / r.n,
               "tpf": r.gen_tokens / r.nfe, "tokens_per_s": r.gen_tokens / r.wall,
               "latency_s": r.wall / r.n, **env}
        key = (name, length, cache, eos)
        if setting.label == VANILLA:
            baseline[key] = rec
        base = baseline[key]
        rec["speedup_tokens_per_s"] = rec["tokens_per_s"] / base["tokens_per_s"]
        rec["speedup_nfe"] = base["nfe"] / rec["nfe"]
        records.append({k: rec[k] for k in RECORD_FIELDS})
        if rank == 0:  # kept current, so that a long run stopped early keeps its cells
            write_json(records, Path(cfg.out))
        bar.update(1)
    bar.close()
    if rank == 0:
        write_results(records, Path(cfg.out))
    return records


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="bench cells", disable=not enabled, file=sys.stderr)


def table(records: list[dict]) -> str:
    head = ("| task | length | cache | eos stop | policy | acc | NFE | TPF | tok/s | "
            "latency s | speedup tok/s | speedup NFE |")
    rows = [head, "|" + "---|" * 12]
    for r in records:
        rows.append(
            f"| {r['task']} | {r['length']} ({r['gen_length']}) | {r['cache']} | "
            f"{'on' if r['stop_at_eos'] else 'off'} | {r['label']} | {100 * r['accuracy']:.1f} | "
            f"{r['nfe']:.1f} | {r['tpf']:.2f} | {r['tokens_per_s']:.1f} | {r['latency_s']:.3f} | "
            f"{r['speedup_tokens_per_s']:.2f}x | {r['speedup_nfe']:.2f}x |")
    return "\n".join(rows)


def write_json(records: list[dict], out: Path):
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(records, indent=1) + "\n")


def write_results(records: list[dict], out: Path):
    from stdec.viz import pareto_plot

    write_json(records, out)
    first = records[0]
    md = (f"# stdec bench\n\nmodel `{first['model']}` on {first['hardware']}; "
          f"versions {first['versions']}; commit {first['git_commit'][:12]}; seed "
          f"{first['seed']}; batch {first['batch_size']}; split {first['split']}.\n\n"
          f"{table(records)}\n")
    (out / "results.md").write_text(md)
    pareto_plot(records, out / "pareto.png")
    print(table(records))
    print(f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'pareto.png'}")

