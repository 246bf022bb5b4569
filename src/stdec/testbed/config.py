"""The testbed's training recipes as typed configs: TrainConfig (the text testbed) and
VisionTrainConfig (the vision testbed). This module imports no torch, so that `stdec train
--help` and a refused option answer at once; testbed/train.py and train_vision.py run them."""

from dataclasses import dataclass, field

from stdec.errors import StdecError
from stdec.tasks import AUX_TASKS, TASKS, get_task

__all__ = ["TrainConfig", "VisionTrainConfig"]


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    out: str = _opt("runs/testbed", "folder for checkpoints and the final model")
    tasks: str = _opt(",".join(TASKS + AUX_TASKS), "comma-separated tasks to train on (arith: "
                      "drills of gsm's arithmetic)")
    train_limit: int = _opt(0, "use the first N training problems of each task (0: all)")
    train_sizes: str = _opt("", "enlarged train splits, e.g. gsm=150000,lists=150000 (tasks "
                            "not named keep their default size; dev and test never change)")
    mixture: str = _opt("", "how often each task's batches are drawn, e.g. gsm=3,lists=2 "
                        "(tasks not named weigh 1; empty: all equally)")
    steps: int = _opt(20000, "optimizer steps")
    batch_size: int = _opt(64, "sequences per step")
    lr: float = _opt(2e-3, "peak learning rate (AdamW)")
    min_lr: float = _opt(1e-4, "learning rate at the end of the cosine decay")
    warmup: int = _opt(500, "linear warm-up steps")
    weight_decay: float = _opt(0.1, "AdamW weight decay (matrices only)")
    vocab_size: int = _opt(2048, "byte-level BPE vocabulary size")
    d_model: int = _opt(256, "model width")
    n_layers: int = _opt(6, "transformer blocks")
    n_heads: int = _opt(4, "attention heads")
    mlp_hidden_size: int = _opt(768, "SwiGLU hidden size")
    block_length: int = _opt(32, "generation lengths are rounded up to multiples of this")
    long_factor: int = _opt(4, "long generation length = this x the longest gold answer")
    tie_numbers: float = _opt(0.0, "share of rows whose numbers are masked by value: every "
                              "occurrence of a number in the response masked or kept together, "
                              "so a result must be computed, not copied from a later mention "
                              "(0: each token drawn alone)")
    eval_every: int = _opt(1000, "steps between dev evaluations (0: never)")
    eval_limit: int = _opt(64, "dev problems per task at each evaluation")
    save_every: int = _opt(500, "steps between resumable checkpoints")
    seed: int = _opt(0, "seed of data order, masks and initialisation")
    init: str = _opt("", "start from this checkpoint's weights and tokenizer (a folder or a "
                     "bundled name such as testbed) instead of random ones; its width and "
                     "depth must be the ones given here. --tasks vision: a text LLaDA "
                     "checkpoint (a new tower on its language model) or a vision testbed "
                     "to train on; the shape comes from it")
    device: str | None = _opt(None, "cpu or cuda (default: cuda if available)")
    time_budget: float = _opt(0.0, "seconds of training: after a short probe, `steps` is set "
                              "to what fits (0: train for `steps`); the log records the count")
    precision: str = _opt("auto", "bf16 (autocast, float32 weights), fp32, or auto: bf16 where "
                          "the chip multiplies bfloat16 natively (CUDA; CPUs with AVX512-BF16 "
                          "or AMX)")

    def __post_init__(self):
        for name in ("train_limit", "time_budget"):
            if getattr(self, name) < 0:
                raise StdecError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0 <= self.tie_numbers <= 1:
            raise StdecError(f"tie_numbers is a share of rows, between 0 and 1; got "
                             f"{self.tie_numbers}.")
        for name in ("steps", "batch_size", "vocab_size", "d_model", "n_layers", "n_heads",
                     "mlp_hidden_size", "block_length", "long_factor", "save_every"):
            if getattr(self, name) < 1:
                raise StdecError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in self.task_names:
            get_task(name)  # unknown names fail here with the list of tasks
        if self.precision not in ("auto", "bf16", "fp32"):
            raise StdecError(f"precision must be auto, bf16 or fp32, got {self.precision!r}.")
        _ = self.task_weights, self.task_train_sizes  # bad entries fail here
        if not 0 < self.min_lr <= self.lr:
            raise StdecError(f"need 0 < min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}.")

    @property
    def task_names(self) -> list[str]:
        return [t.strip() for t in self.tasks.split(",") if t.strip()]

    @property
    def task_weights(self) -> list[float]:
        """Relative draw frequency of each task of `task_names`, from `mixture`."""
        given = self._per_task("mixture", float, "TASK=WEIGHT", "a weight > 0", "gsm=3")
        return [given.get(name, 1.0) for name in self.task_names]

    @property
    def task_train_sizes(self) -> dict[str, int]:
        """The enlarged train splits, from `train_sizes`: {task: problems}."""
        return self._per_task("train_sizes", int, "TASK=N", "N > 0", "gsm=150000")

    def _per_task(self, option: str, kind: type, form: str, valid: str, example: str) -> dict:
        given = {}
        for item in filter(None, (t.strip() for t in getattr(self, option).split(","))):
            name, _, value = (part.strip() for part in item.partition("="))
            try:
                number = kind(value)
            except ValueError:
                number = 0
            if name not in self.task_names or not number > 0:
                raise StdecError(f"{option} entry {item!r} must be {form} with a task of "
                                 f"{self.tasks!r} and {valid}, e.g. {example}.")
            given[name] = number
        return given


@dataclass(frozen=True)
class VisionTrainConfig:
    out: str = _opt("runs/testbed-vision", "folder for checkpoints and the final model")
    steps: int = _opt(20000, "optimizer steps")
    batch_size: int = _opt(16, "sequences per step")
    lr: float = _opt(1e-3, "peak learning rate (AdamW)")
    min_lr: float = _opt(1e-4, "learning rate at the end of the cosine decay")
    warmup: int = _opt(300, "linear warm-up steps")
    weight_decay: float = _opt(0.1, "AdamW weight decay (matrices only)")
    vocab_size: int = _opt(512, "byte-level BPE vocabulary size")
    d_model: int = _opt(128, "model width")
    n_layers: int = _opt(4, "transformer blocks")
    n_heads: int = _opt(4, "attention heads")
    mlp_hidden_size: int = _opt(384, "SwiGLU hidden size")
    vision_hidden: int = _opt(64, "width of the vision tower")
    vision_layers: int = _opt(2, "blocks of the vision tower")
    patch_size: int = _opt(16, "pixels a side of one patch")
    gen_length: int = _opt(32, "answer tokens trained and decoded")
    train_size: int = _opt(20000, "pictures in the train split")
    eval_every: int = _opt(1000, "steps between dev evaluations (0: never)")
    eval_limit: int = _opt(100, "dev problems at each evaluation")
    save_every: int = _opt(250, "steps between resumable checkpoints")
    seed: int = _opt(0, "seed of data order, masks and initialisation")
    threads: int = _opt(1, "CPU threads")
    device: str = _opt("", "cpu or cuda (default: cuda when there is one)")
    init: str = _opt("", "a text LLaDA checkpoint (a folder, or testbed) whose language model "
                     "and tokenizer the new model starts from, as LLaDA-V starts from "
                     "LLaDA-8B-Instruct (its shape replaces d_model, n_layers, n_heads, "
                     "mlp_hidden_size and vocab_size); or a vision testbed to train on, whose "
                     "tower's shape also replaces vision_*; empty: a new one from scratch")
    tower_steps: int = _opt(0, "steps of the tower and projector alone on what each cell of a "
                            "picture holds, in the language model's words; they are then "
                            "frozen (0: none, all trained together)")

    def __post_init__(self):
        for name in ("steps", "batch_size", "vocab_size", "d_model", "n_layers", "n_heads",
                     "mlp_hidden_size", "vision_hidden", "vision_layers", "patch_size",
                     "gen_length", "train_size", "eval_limit", "save_every", "threads"):
            if getattr(self, name) < 1:
                raise StdecError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("eval_every", "tower_steps", "weight_decay"):
            if getattr(self, name) < 0:
                raise StdecError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0 < self.min_lr <= self.lr:
            raise StdecError(f"need 0 < min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}.")
