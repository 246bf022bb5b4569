"""`stdec train`: the masked-diffusion (LLaDA) recipe for the bundled testbed model.

Each example is a chat-templated prompt and its gold response, closed by <|eot_id|> and
padded with EOS to a length drawn per batch up to the task's long generation length,
so the model learns to end an answer at any gen_length. A mask ratio t ~ U(eps, 1) is
drawn per sequence, each response token is masked with probability t, and the loss is
the cross-entropy on masked tokens weighted by 1/t, averaged over response tokens
(LLaDA's SFT objective). Prompts are left-padded exactly as the decoding loop pads them.
With --tie-numbers, a share of the rows draw one mask per number value instead of per token:
each token is still masked with probability t, but a result and its later copies go
together, so the model cannot learn to copy a result instead of computing it.
"""

import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from stdec.errors import StdecError
from stdec.models import resolve_device, save_model
from stdec.models.llada import LLaDAConfig, LLaDAModelLM
from stdec.tasks import Problem, get_task
from stdec.tasks.lengths import LENGTHS_FILE, encode_problems, gen_lengths
from stdec.testbed.config import TrainConfig

__all__ = ["TrainConfig", "train"]

STATE = "optimizer/state"  # optimizer moments (safetensors) and progress (json), to resume


def get_train_task(name: str, cfg: TrainConfig):
    size = cfg.task_train_sizes.get(name)
    return get_task(name, {"train": size} if size else None)


def train_split(task, cfg: TrainConfig) -> list:
    problems = task.problems("train")
    return problems[: cfg.train_limit] if cfg.train_limit else problems


def _bare_train_split(name: str, cfg: TrainConfig) -> list[Problem]:
    """A task's train split without the scorers' metadata (cheap to send between processes)."""
    return [Problem(p.id, p.prompt, p.answer)
            for p in train_split(get_train_task(name, cfg), cfg)]


def train_splits(cfg: TrainConfig) -> list[list[Problem]]:
    """Each task's train split. Enlarged splits are drawn in parallel, one process a task:
    drawing a few hundred thousand problems takes a minute, which a GPU run would wait for."""
    workers = min(len(cfg.task_names), os.cpu_count() or 1)
    if not cfg.train_sizes or workers < 2:
        return [_bare_train_split(name, cfg) for name in cfg.task_names]
    spawn = multiprocessing.get_context("spawn")  # never fork a process that holds torch
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        return list(pool.map(_bare_train_split, cfg.task_names, [cfg] * len(cfg.task_names)))


def number_groups(answer: list[int], digits: np.ndarray) -> list[int]:
    """Per token of `answer`: k >= 1 on the digits of its k-th distinct number (a run of digit
    tokens; `digits` gives each token id's digit, -1 for the rest), 0 elsewhere. Every
    occurrence of one value gets the same k."""
    out, values, run = [0] * len(answer), {}, []
    for i, tok in enumerate([*answer, -1]):  # the -1 closes a number at the end
        if tok >= 0 and digits[tok] >= 0:
            run.append(i)
            continue
        if run:
            k = values.setdefault(tuple(answer[j] for j in run), len(values) + 1)
            for j in run:
                out[j] = k
            run = []
    return out


def digit_ids(tokenizer) -> np.ndarray:
    """Each token id's digit, -1 for the rest (the tokenizer has one token per digit)."""
    digits = np.full(len(tokenizer), -1, dtype=np.int64)
    for d in range(10):
        digits[tokenizer.convert_tokens_to_ids(str(d))] = d
    return digits


class Batches:
    """Random batches of left-padded prompts and EOS-padded responses, reproducible by step.

    Each batch comes from one task, so a batch of short `lists` answers is not padded out to
    the length of a `gsm` solution. Tasks are drawn by `weights` (equally when None), whatever
    the size of their training splits. Each task's examples are packed once into padded
    arrays, so that a batch is a few array gathers: a Python loop over its rows would cost as
    much host time as a GPU step.
    """

    def __init__(self, examples: list[tuple[list[int], list[int], int]], long_len: list[int],
                 ids: dict[str, int], batch_size: int, seed: int, long_factor: int,
                 weights: list[float] | None = None, tie: float = 0.0,
                 digits: np.ndarray | None = None):
        self.long_len, self.ids, self.long_factor = long_len, ids, long_factor
        self.batch_size, self.seed = batch_size, seed
        # tie_numbers: the share of rows masked by number value; digits: each token id's
        # digit, -1 for the rest (needed when tie > 0)
        self.tie, self.digits = tie, digits
        w = np.ones(len(long_len)) if weights is None else np.asarray(weights, dtype=float)
        self.weights = w / w.sum()
        self.packed = [self._pack([(p, a) for p, a, t in examples if t == task])
                       for task in range(len(long_len))]

    def _pack(self, rows: list[tuple[list[int], list[int]]]) -> tuple[np.ndarray, ...]:
        """(prompts right-aligned in pad, prompt lengths, answers left-aligned in EOS, lengths,
        the answers' number groups (number_groups) or None when numbers are not tied)"""
        plen = np.array([len(p) for p, _ in rows], dtype=np.int64)
        alen = np.array([len(a) for _, a in rows], dtype=np.int64)
        prompts = np.full((len(rows), plen.max(initial=1)), self.ids["pad"], dtype=np.int64)
        answers = np.full((len(rows), alen.max(initial=1)), self.ids["eos"], dtype=np.int64)
        groups = np.zeros(answers.shape, dtype=np.int64) if self.tie else None
        for i, (p, a) in enumerate(rows):
            prompts[i, prompts.shape[1] - len(p):] = p
            answers[i, : len(a)] = a
            if groups is not None:
                groups[i, : len(a)] = number_groups(a, self.digits)
        return prompts, plen, answers, alen, groups

    def __call__(self, step: int, device) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, step])
        task = int(rng.choice(len(self.packed), p=self.weights))
        prompts, plen, answers, alen, groups = self.packed[task]
        rows = rng.choice(len(plen), size=self.batch_size)
        shortest = int(alen[rows].max())
        # response length, shared by the batch: three batches in four near the answers' own
        # length (the standard gen_length regime), one anywhere up to the long one. The EOS
        # tail is quick to learn, and every padded position costs a forward.
        longest = self.long_len[task]
        if rng.random() < 0.75:
            longest = shortest + (longest - shortest) // self.long_factor
        R = int(rng.integers(shortest, max(shortest, longest) + 1))
        P = int(plen[rows].max())
        B = len(rows)
        response = np.full((B, R), self.ids["eos"], dtype=np.int64)
        width = min(R, answers.shape[1])
        response[:, :width] = answers[rows, :width]
        x = torch.from_numpy(np.concatenate([prompts[rows, prompts.shape[1] - P:], response], 1))
        n_pad = torch.from_numpy(P - plen[rows])[:, None]
        cols = torch.arange(P + R)[None]
        keys = cols >= n_pad
        pos = (cols - n_pad).clamp(min=0)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        # mask ratio per row, t ~ U(eps, 1), stratified over the batch (one draw in each of
        # B equal bins, as MDLM does): the same objective with far less variance between
        # batches, which matters with weights as large as 1/eps
        u = (torch.arange(B) + torch.rand(B, generator=gen))[torch.randperm(B, generator=gen)] / B
        t = ((1 - 1e-3) * u + 1e-3)[:, None]
        masked = torch.rand(B, R, generator=gen) < t
        if self.tie:  # in tied rows one draw per number value, each token's chance still t
            g = torch.zeros(B, R, dtype=torch.long)
            g[:, :width] = torch.from_numpy(groups[rows, :width])
            by_value = torch.rand(B, int(g.max()) + 1, generator=gen) < t
            tied = (torch.rand(B, 1, generator=gen) < self.tie) & (g > 0)
            masked = torch.where(tied, by_value.gather(1, g), masked)
        target = x[:, P:].clone()
        x[:, P:] = target.masked_fill(masked, self.ids["mask"])
        return tuple(v.to(device, non_blocking=True)
                     for v in (x, pos, keys, target, masked, t, torch.tensor(P)))


def native_bf16(device: torch.device) -> bool:
    """Whether the chip multiplies bfloat16 natively, so that autocast speeds training up.

    On a CPU without it, bfloat16 is emulated and slower than float32. With AVX512-BF16 a
    training step of the testbed recipe runs about 2.4 times faster (AMD EPYC, 1 thread).
    """
    from stdec.util import cpuinfo

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = (cpuinfo("flags") or "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def diffusion_loss(model, batch) -> torch.Tensor:
    x, pos, keys, target, masked, t, P = batch
    P = int(P)
    logits = model(x, position_ids=pos, attention_mask=keys, logits_slice=slice(P, None))
    ce = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="none")
    return (ce.view_as(target) * masked / t).sum() / target.numel()


PROBE_STEPS = 40  # steps timed to size a run with a time budget


def fit_to_budget(cfg: TrainConfig, step: int, probe: tuple[int, float],
                  elapsed: float) -> TrainConfig:
    """The config with `steps` (and the evaluation and save intervals) set so that training
    ends within cfg.time_budget seconds of its start. Dev evaluations, saves and the first
    steps' warm-up are paid from a 10% reserve."""
    per_step = (time.perf_counter() - probe[1]) / (step - probe[0])
    steps = step + max(0, int((0.9 * cfg.time_budget - elapsed) / per_step))
    every = max(1, max(steps, cfg.warmup + 1, step) // 4)
    return replace(cfg, steps=4 * every, eval_every=every if cfg.eval_every else 0,
                   save_every=min(cfg.save_every, every))


def optimizer_step(model, optimizer, loss: torch.Tensor):
    """Backward, clip the gradient norm to 1 and step: one update of the testbeds' recipes."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    done = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(done, 1.0)))


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def save_state(folder: Path, model, optimizer, step: int, cfg: TrainConfig, log: list):
    """A resumable checkpoint: weights, optimizer moments, step, config and log (no pickles)."""
    (folder / STATE).parent.mkdir(parents=True, exist_ok=True)
    save_model(model, folder)
    moments = {f"{i}.{k}": v for i, s in optimizer.state_dict()["state"].items()
               for k, v in s.items()}
    moments = {k: v.contiguous().cpu() for k, v in moments.items()}
    save_file(moments, folder / f"{STATE}.safetensors")
    progress = {"step": step, "config": asdict(cfg), "log": log}
    (folder / f"{STATE}.json").write_text(json.dumps(progress, indent=1))


def load_state(folder: Path, model, optimizer) -> tuple[int, list]:
    moments = load_file(folder / f"{STATE}.safetensors")
    state = optimizer.state_dict()
    for key, value in moments.items():
        i, name = key.split(".", 1)
        state["state"].setdefault(int(i), {})[name] = value
    optimizer.load_state_dict(state)
    progress = json.loads((folder / f"{STATE}.json").read_text())
    return progress["step"], progress["log"]


def dev_eval(model, tokenizer, cfg: TrainConfig, lengths: dict) -> dict[str, float]:
    from stdec.decoding.config import DecodeConfig
    from stdec.decoding.registry import VANILLA_OPTIONS
    from stdec.tasks import evaluate

    model.eval()
    scores = {}
    for name in cfg.task_names:
        decode = DecodeConfig(**VANILLA_OPTIONS, cache="dual",
                              gen_length=lengths[name]["gen_length"],
                              block_length=cfg.block_length)
        res = evaluate(model, tokenizer, name, "dev", decode, limit=cfg.eval_limit, batch_size=64)
        scores[name] = res.accuracy
    model.train()
    return scores


def warm_start(cfg: TrainConfig, device: torch.device):
    """(model, tokenizer) of cfg.init for training on, after checking its shape is cfg's."""
    from stdec.api import load

    model, tokenizer = load(cfg.init, dtype="float32", device=device, fuse=False)
    if not isinstance(model, LLaDAModelLM):
        raise StdecError(f"--init {cfg.init!r} is a {type(model).__name__}; stdec train "
                         "continues LLaDA-architecture checkpoints only.")
    mc = model.config
    theirs = {"d_model": mc.d_model, "n_layers": mc.n_layers, "n_heads": mc.n_heads,
              "mlp_hidden_size": mc.mlp_hidden_size}
    ours = {k: getattr(cfg, k) for k in theirs}
    if theirs != ours:
        wrong = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in theirs.items()
                          if ours[k] != v)
        raise StdecError(f"--init {cfg.init!r} has another shape; pass {wrong} to train it.")
    return model, tokenizer


def train(cfg: TrainConfig, *, resume: bool = True, progress: bool = True) -> Path:
    """Train (or resume) and write a LLaDA-format checkpoint with its tokenizer to cfg.out."""
    from tqdm import tqdm

    from stdec.testbed.tokenizer import train_tokenizer

    began = time.perf_counter()  # a time budget counts data preparation too
    out, ckpt = Path(cfg.out), Path(cfg.out) / "checkpoint"
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    tasks = {name: get_task(name) for name in cfg.task_names}  # default sizes: see below
    if resume and (ckpt / f"{STATE}.json").is_file():
        from stdec.api import load

        model, tokenizer = load(ckpt, dtype="float32", device=device, fuse=False)
        saved = TrainConfig(**json.loads((ckpt / f"{STATE}.json").read_text())["config"])
        # a resume may lengthen the schedule, change the precision or the task mixture
        if replace(saved, steps=cfg.steps, eval_every=cfg.eval_every, device=cfg.device,
                   precision=cfg.precision, tasks=cfg.tasks, save_every=cfg.save_every,
                   time_budget=cfg.time_budget) != cfg:
            raise StdecError(f"{str(ckpt)!r} was trained with other settings; pass the same "
                             "options, or --no-resume to start over.")
        if cfg.time_budget:  # the schedule was fitted to the budget when the run began
            cfg = replace(cfg, steps=saved.steps, eval_every=saved.eval_every,
                          save_every=saved.save_every)
    elif cfg.init:
        model, tokenizer = warm_start(cfg, device)
    else:
        # the vocabulary from the default-size splits: a larger split adds time, not words
        texts = [t for task in tasks.values() for p in task.problems("train")
                 for t in (p.prompt, p.answer)]
        tokenizer = train_tokenizer(texts, vocab_size=cfg.vocab_size)
        model_cfg = LLaDAConfig(
            d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
            mlp_hidden_size=cfg.mlp_hidden_size, vocab_size=len(tokenizer),
            max_sequence_length=1024, rope_theta=10000.0,
            mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)
        with torch.device(device):
            model = LLaDAModelLM(model_cfg)
            for p in model.parameters():  # small init, as in LLaDA
                if p.dim() >= 2:
                    torch.nn.init.normal_(p, std=0.02)
    # generation lengths from the default-size splits: a larger train split must not move
    # the standard gen_length that every rule is measured at
    lengths = gen_lengths(tokenizer, tasks, cfg.block_length, cfg.long_factor)
    examples = [(prompt, answer, i) for i, split in enumerate(train_splits(cfg))
                for prompt, answer in encode_problems(tokenizer, split)]
    ids = {"eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
           "mask": tokenizer.mask_token_id}
    batches = Batches(examples, [lengths[n]["long_gen_length"] for n in tasks], ids,
                      cfg.batch_size, cfg.seed, cfg.long_factor, cfg.task_weights,
                      cfg.tie_numbers, digit_ids(tokenizer))
    optimizer = make_optimizer(model, cfg)
    step, log = 0, []
    if resume and (ckpt / f"{STATE}.json").is_file():
        step, log = load_state(ckpt, model, optimizer)
    model.train()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and native_bf16(device))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, file=sys.stderr)
    # elapsed time carries over a resume
    start, losses = time.perf_counter() - (log[-1]["elapsed_s"] if log else 0.0), []
    pending: list[torch.Tensor] = []  # losses still on the device: read them in bulk
    probe = (step, time.perf_counter())
    fit = cfg.time_budget > 0 and step < PROBE_STEPS // 4  # else resumed: schedule as saved
    while step < cfg.steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        with autocast:
            loss = diffusion_loss(model, batches(step, device))
        optimizer_step(model, optimizer, loss)
        step += 1
        pending.append(loss.detach())
        bar.update(1)
        if step == PROBE_STEPS // 4:  # the first steps pay for warm-up: time from here
            probe = (step, time.perf_counter())
        if fit and step == PROBE_STEPS:
            cfg = fit_to_budget(cfg, step, probe, time.perf_counter() - began)
            bar.total = cfg.steps
            bar.write(f"time budget {cfg.time_budget:g} s: training for {cfg.steps} steps")
        if len(pending) == 50 or step == cfg.steps or step % cfg.save_every == 0:
            losses += torch.stack(pending).float().tolist()
            pending = []
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        evaluate_now = cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps)
        if evaluate_now:
            scores = dev_eval(model, tokenizer, cfg, lengths)
            # schedule, precision and tasks per entry: a resumed run may change them (the
            # config holds the last ones)
            log.append({"step": step, "loss": float(np.mean(losses[-200:])), "dev": scores,
                        "elapsed_s": time.perf_counter() - start, "schedule_steps": cfg.steps,
                        "precision": "bf16" if bf16 else "fp32", "tasks": cfg.tasks})
            bar.write(f"step {step}: loss {log[-1]['loss']:.3f} dev {scores}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_state(ckpt, model, optimizer, step, cfg, log)
            tokenizer.save_pretrained(str(ckpt))
            (ckpt / LENGTHS_FILE).write_text(json.dumps(lengths, indent=1) + "\n")
    bar.close()
    # the deliverable: weights, tokenizer and generation lengths, without optimizer state
    save_model(model, out)
    tokenizer.save_pretrained(str(out))
    (out / LENGTHS_FILE).write_text(json.dumps(lengths, indent=1) + "\n")
    from stdec.util import hardware

    record = {"config": asdict(cfg), "hardware": hardware(device), "log": log}
    (out / "train_log.json").write_text(json.dumps(record, indent=1))
    return out

