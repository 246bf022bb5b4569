"""Small random LLaDA checkpoints with a real tokenizer: for tests, demos and benchmarks."""

from pathlib import Path

import torch

from stdec.models import save_model
from stdec.models.llada import LLaDAConfig, LLaDAModelLM
from stdec.tokenizer import train_tokenizer

__all__ = ["DEMO_TEXT", "random_checkpoint", "random_model", "tiny_config"]

DEMO_TEXT = [
    "Tom has 3 apples and buys 4 more. How many apples does he have? 3 + 4 = 7. #### 7",
    "def add(a, b):\n    return a + b\n",
    "Sort the list [3, 1, 2]. Answer: [1, 2, 3]",
    "The quick brown fox jumps over the lazy dog.",
]


def tiny_config(**overrides) -> LLaDAConfig:
    """A 2-layer, d=64 LLaDA; overrides may set any LLaDAConfig field."""
    base = dict(d_model=64, n_layers=2, n_heads=4, mlp_hidden_size=128, vocab_size=300,
                max_sequence_length=512, rope_theta=10000.0, mask_token_id=2, eos_token_id=1,
                pad_token_id=1)
    return LLaDAConfig(**{**base, **overrides})


def random_model(cfg: LLaDAConfig, *, seed: int = 0, peak: float = 4.0) -> LLaDAModelLM:
    """Random weights; `peak` scales the output head so that some predictions are confident."""
    torch.manual_seed(seed)
    model = LLaDAModelLM(cfg)
    head = model.model.transformer["wte" if cfg.weight_tying else "ff_out"]
    with torch.no_grad():
        head.weight.mul_(peak)
    return model.eval()


def random_checkpoint(path: str | Path, *, seed: int = 0, peak: float = 4.0,
                      **overrides) -> Path:
    """Write a tiny random LLaDA checkpoint with a byte-level BPE tokenizer to `path`."""
    tokenizer = train_tokenizer(DEMO_TEXT * 8, vocab_size=300)
    vocab = len(tokenizer)
    cfg = tiny_config(vocab_size=vocab, mask_token_id=tokenizer.mask_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      **overrides)
    save_model(random_model(cfg, seed=seed, peak=peak), path)
    tokenizer.save_pretrained(str(path))
    return Path(path)
