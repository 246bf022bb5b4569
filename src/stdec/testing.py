"""Small random LLaDA (and Dream) checkpoints with a real tokenizer: for tests, demos and
benchmarks."""

from pathlib import Path

import torch

from stdec.models import save_model
from stdec.models.dream import DreamConfig, DreamModel
from stdec.models.lavida import LaViDaConfig, LaViDaDreamConfig, LaViDaDreamModel, LaViDaModel
from stdec.models.llada import LLaDAConfig, LLaDAModelLM
from stdec.models.llada_v import LLaDAVConfig, LLaDAVModel
from stdec.testbed.tokenizer import train_tokenizer

__all__ = ["DEMO_TEXT", "random_checkpoint", "random_dream_model", "random_llava_checkpoint",
           "random_llava_model", "random_model", "tiny_config", "tiny_dream_config",
           "tiny_lavida_config", "tiny_lavida_dream_config", "tiny_llava_config"]

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


def tiny_dream_config(**overrides) -> DreamConfig:
    """A 2-layer, d=64 Dream with grouped-query attention (4 query, 2 KV heads); overrides
    may set any DreamConfig field."""
    base = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, vocab_size=300, max_position_embeddings=512,
                rope_theta=10000.0, mask_token_id=2, eos_token_id=1, pad_token_id=1,
                bos_token_id=None)
    return DreamConfig(**{**base, **overrides})


def random_dream_model(cfg: DreamConfig, *, seed: int = 0, peak: float = 4.0) -> DreamModel:
    """Random weights (q/k/v biases included); `peak` scales the output head as random_model."""
    torch.manual_seed(seed)
    model = DreamModel(cfg)
    head = model.model.embed_tokens if cfg.tie_word_embeddings else model.lm_head
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


def tiny_llava_config(vision: dict | None = None, **overrides) -> LLaDAVConfig:
    """LLaDA-V's layout at toy size: a 2-layer SigLIP (32-pixel tiles of 8-pixel patches, so 16
    vectors a tile, hidden 32) before tiny_config's LLaDA; anyres_max_4 over (1x1)..(6x6)."""
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, image_size=32, patch_size=8)
    return LLaDAVConfig(tiny_config(**overrides), {**tower, **(vision or {})})


def tiny_lavida_config(**overrides) -> LaViDaConfig:
    """LaViDa's layout at toy size: tiny_llava_config's tower (4x4 vectors a 32-px tile, pooled
    to 2x2) and LaViDa's five grids scaled from 384- to 32-pixel tiles."""
    return LaViDaConfig(tiny_config(**overrides), tiny_llava_config().vision,
                        image_grid_pinpoints=[[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]])


def tiny_lavida_dream_config(**overrides) -> LaViDaDreamConfig:
    """tiny_lavida_config's tower and grids before tiny_dream_config's Dream."""
    lavida = tiny_lavida_config()
    return LaViDaDreamConfig(tiny_dream_config(**overrides), lavida.vision,
                             image_grid_pinpoints=lavida.image_grid_pinpoints)


def random_llava_model(cfg: LLaDAVConfig, *, seed: int = 0, peak: float = 4.0) -> LLaDAVModel:
    """Random weights (the image newline too); `peak` scales the output head as random_model.
    A LaViDaConfig gives a LaViDaModel, a LaViDaDreamConfig a LaViDaDreamModel."""
    torch.manual_seed(seed)
    cls = {LaViDaDreamConfig: LaViDaDreamModel, LaViDaConfig: LaViDaModel}.get(type(cfg),
                                                                                LLaDAVModel)
    model = cls(cfg)
    lm = model.language_model
    head = lm.lm_head if hasattr(lm, "lm_head") else lm.model.transformer.ff_out
    with torch.no_grad():
        head.weight.mul_(peak)
        if hasattr(model, "image_newline"):
            d = model.image_newline.shape[0]
            model.image_newline.normal_(0.0, d ** -0.5)
    return model.eval()


def random_llava_checkpoint(path: str | Path, *, seed: int = 0, peak: float = 4.0,
                            max_shard_bytes: int | None = None, vision: dict | None = None,
                            lavida: str | None = None, **overrides) -> Path:
    """Write a tiny random LLaDA-V checkpoint (its config keys and tensor names), or with
    `lavida` ("llada" or "dream") a LaViDa one, with a byte-level BPE tokenizer to `path`."""
    tokenizer = train_tokenizer(DEMO_TEXT * 8, vocab_size=300)
    ids = dict(vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if lavida == "dream":
        cfg = tiny_lavida_dream_config(**ids, **overrides)
    elif lavida:
        cfg = tiny_lavida_config(**ids, **overrides)
    else:
        cfg = tiny_llava_config(vision, **ids, **overrides)
    save_model(random_llava_model(cfg, seed=seed, peak=peak), path,
               max_shard_bytes=max_shard_bytes)
    tokenizer.save_pretrained(str(path))
    return Path(path)
