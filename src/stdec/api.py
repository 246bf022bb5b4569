"""The Python API: load a model and its tokenizer, generate text with any policy."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from stdec.decoding.config import DecodeConfig, Defaults, build, check_for_model
from stdec.decoding.defaults import FILE, checkpoint_defaults, every_option
from stdec.decoding.engine import RowStats, Trace, decode
from stdec.errors import StdecError
from stdec.models import load_model, quant, read_config, resolve_device, resolve_dtype, skeleton
from stdec.models.images import (
    IMAGE_PLACEHOLDER,
    ImageInput,
    load_image,
    require_vision,
    sees_images,
    tokenize_with_images,
)
from stdec.models.presets import PRESETS, _offline, is_hub_id, preset_for, resolve_model
from stdec.util import check_quantize

__all__ = ["Generation", "decoding_defaults", "encode_chat", "generate", "load",
           "model_defaults", "resolve_model_path"]

ASSETS = Path(__file__).parent / "assets"
MASK_TOKENS = ("<|mdm_mask|>", "<|mask|>")  # LLaDA's, Dream's
END_TOKENS = ("<|endoftext|>", "<|eot_id|>", "<|im_end|>")  # LLaDA's two; Dream's chat turn end


@dataclass
class Generation:
    texts: list[str]  # each row's text up to its first EOS, special tokens removed
    ids: Tensor  # (B, gen_length) generated token ids
    stats: list[RowStats]
    trace: Trace | None  # when config.trace


BUNDLED = ("testbed", "testbed-vision")  # models that ship inside the package (assets/)


def resolve_model_path(model: str | Path) -> Path:
    """A checkpoint folder, a Hugging Face Hub id, or the name of a bundled model (BUNDLED)."""
    path = Path(model)
    if not path.exists() and isinstance(model, str) and is_hub_id(model):
        return resolve_model(model)
    if path.exists() or str(model) not in BUNDLED:
        return path
    if not (ASSETS / str(model) / "config.json").is_file():
        raise StdecError(f"this install has no bundled {model} model; pass --model PATH (or "
                         "make a tiny random one with `stdec random-model DIR`).")
    return ASSETS / str(model)


def load(model: str | Path, *, dtype: str | torch.dtype | None = None,
         device: str | torch.device | None = None, fuse: bool = True,
         cuda_graphs: bool = True, compile: bool = False, quantize: str | None = None,
         quantize_head: bool = False, quantize_embeddings: bool = False):
    """(model, tokenizer) from a checkpoint folder that also holds a tokenizer, the model
    ready for inference (eval mode; with `fuse`, projections fused: pass fuse=False to
    train it; on CUDA, `cuda_graphs` lets the engine replay its dual-cache block steps as
    CUDA graphs, decoding/graphs.py; `compile` runs the forward through torch.compile).

    `quantize` "int8" or "int4" stores the language model's linear layers as weight-only
    int8 or int4 through torchao (pip install 'stdec[quant]'); norms, the input embeddings
    (unless `quantize_embeddings`), the output head (unless `quantize_head`) and a vision
    tower keep `dtype`. A mode this machine cannot run is refused before any weight is read
    (models/quant.py)."""
    from transformers import PreTrainedTokenizerFast, Qwen2TokenizerFast

    path = resolve_model_path(model)
    raw = read_config(path)  # fail on a bad folder before touching the tokenizer
    defaults = checkpoint_defaults(model, path, raw)  # a bad decoding_defaults.json fails too
    if check_quantize(quantize, quantize_head, quantize_embeddings):
        where = resolve_device(device)
        quant.check(skeleton(raw, path), quantize, where, resolve_dtype(dtype, where),
                    quantize_head, quantize_embeddings)
    if (path / "tokenizer.json").is_file():
        cls = PreTrainedTokenizerFast
    elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        cls = Qwen2TokenizerFast  # Dream ships Qwen2's BPE files and a remote-code class
    else:
        raise StdecError(f"{str(path)!r} has no tokenizer (tokenizer.json, or vocab.json with "
                         "merges.txt); use stdec.load_model for the weights alone.")
    try:
        tokenizer = cls.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise StdecError(f"the tokenizer in {str(path)!r} could not be read ({err}).") from None
    loaded = load_model(path, dtype=dtype, device=device)
    if fuse:  # fewer, larger multiplies; the same numbers (tests/test_fused.py)
        loaded.fuse()
    if quantize:  # after fusing: a fused layer is quantized as one
        quant.quantize(loaded, quantize, quantize_head, quantize_embeddings)
    # what generate() lays the user's options over; whether the engine may capture graphs
    preset = preset_for(str(model), raw)
    if preset is not None:  # a known checkpoint's prompts as its official code builds them
        loaded.configure(system_prompt=preset.system_prompt,
                         drop_after_image=preset.drop_after_image)
    loaded.configure(decoding_defaults=defaults, cuda_graphs=cuda_graphs)
    if compile:
        compile_model(loaded)
    return loaded, tokenizer


def compile_model(model):
    """torch.compile the model's forward, in place. The engine calls it in a few kinds of
    step (full, prefix, dual; sliced or per-row logits; with or without a padding mask),
    each its own graph, so dynamo's recompile limit is raised to let every kind compile
    rather than fall back to eager after the eighth. The first call of each kind compiles
    (seconds to minutes); later ones reuse it. Measured in the README."""
    import torch._dynamo.config as dynamo

    dynamo.recompile_limit = max(dynamo.recompile_limit, 64)
    model.compile(dynamic=True)


def model_defaults(model) -> Defaults:
    """The decoding defaults a loaded model carries (preset < its folder's file), each with
    its source; empty for a model built in memory, which decodes with DecodeConfig's own."""
    defaults = getattr(model, "decoding_defaults", None)  # a model from elsewhere may lack it
    return defaults if isinstance(defaults, Defaults) else Defaults(defaults or {})


def decoding_defaults(model: str | Path) -> dict:
    """The effective decoding defaults of a checkpoint folder, Hugging Face Hub id or bundled
    model name, as a dict of DecodeConfig options: code < preset < the folder's
    decoding_defaults.json. A hub id not on disk fetches only its config.json and that file;
    a known hub id that cannot be fetched gets its preset."""
    path = Path(model)
    if not path.exists() and isinstance(model, str) and is_hub_id(model):
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(model, allow_patterns=["config.json", FILE],
                                          local_files_only=_offline()))
        except Exception:  # offline, gated or unknown: a known id still has its preset
            if model in PRESETS:
                return every_option(PRESETS[model].decoding)
            path = resolve_model_path(model)  # raises the one-sentence error
    else:
        path = resolve_model_path(model)
    return every_option(checkpoint_defaults(model, path, read_config(path)))


def mask_token_id(tokenizer) -> int | None:
    if getattr(tokenizer, "mask_token_id", None) is not None:
        return tokenizer.mask_token_id
    for token in MASK_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is not None and tid != tokenizer.unk_token_id:
            return tid
    return None


def end_token_ids(tokenizer) -> list[int]:
    """Every end-of-text id the tokenizer knows: its EOS and the END_TOKENS it has."""
    ids = {tokenizer.eos_token_id}
    for token in END_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is not None and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def encode(tokenizer, prompts: Sequence[str], chat: bool,
           images: Sequence[Sequence] | None = None,
           system: str | None = None, drop_after_image: bool = False) -> list[list[int]]:
    """Token ids of each prompt. With `images` (a list per prompt: a vision-language model),
    one placeholder id per image where its "<image>" stands (at the front, one per line,
    when the text has none). `system`: a system message before each chat prompt (the one a
    model was trained with, e.g. LaViDa's). `drop_after_image`: the model's trait of that
    name (tokenize_with_images)."""
    out = []
    for i, p in enumerate(prompts):
        n = None if images is None else len(images[i])
        if n and IMAGE_PLACEHOLDER not in p:
            p = f"{IMAGE_PLACEHOLDER}\n" * n + p
        messages = [{"role": "user", "content": p}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        out.append(encode_chat(tokenizer, messages, n, drop_after_image) if chat
                   else encode_text(tokenizer, p, n, drop_after_image))
    return out


def encode_text(tokenizer, text: str, n_images: int | None = None,
                drop_after_image: bool = False) -> list[int]:
    """`n_images` None: a text model's prompt; a count: a vision-language model's, whose every
    "<image>" must have its image."""
    if n_images is not None:
        from stdec.models.llada_v import IMAGE_TOKEN_INDEX

        return tokenize_with_images(text, tokenizer, n_images, IMAGE_TOKEN_INDEX,
                                    drop_after_image)
    return tokenizer(text)["input_ids"]


def encode_chat(tokenizer, messages: list[dict], n_images: int | None = None,
                drop_after_image: bool = False) -> list[int]:
    """Token ids of a conversation through the tokenizer's chat template, ready for the
    assistant's turn; for a vision-language model (`n_images` a count), a placeholder id for
    each "<image>" in it (LLaVA's way: the templated text tokenized piece by piece)."""
    if not getattr(tokenizer, "chat_template", None):
        raise StdecError("chat=True needs a tokenizer with a chat template; this one has "
                         "none, so pass chat=False.")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if n_images is not None:
        return encode_text(tokenizer, text, n_images, drop_after_image)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def check_images(images, prompts: list[str], single: bool) -> list[list]:
    """Each prompt's images, loaded and checked (one sentence on the first bad one). For one
    prompt: an image or a list of images; for a list of prompts: a list with one entry (an
    image, a list, or None) per prompt."""
    if images is None:
        return [[] for _ in prompts]
    if single:
        images = [images]
    elif not isinstance(images, list | tuple) or len(images) != len(prompts):
        raise StdecError(f"images must be a list with one entry per prompt ({len(prompts)}), "
                         "each an image, a list of images or None.")
    out = []
    for entry in images:
        entry = [] if entry is None else entry
        entry = list(entry) if isinstance(entry, list | tuple) else [entry]
        out.append([load_image(e) for e in entry])
    return out


def check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or not prompts:
        raise StdecError("prompts must be a string or a non-empty list of strings.")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise StdecError(f"prompt {i} is empty or not a string ({p!r}); give some text.")
    return list(prompts)


def with_options(config: DecodeConfig | None, options: dict, defaults: dict) -> DecodeConfig:
    """`options` over `config` (or, without one, over the model's decoding defaults)."""
    if config is None:
        return build(options, defaults)
    return build(options, config.options()) if options else config


def per_prompt_seeds(config: DecodeConfig, seed, n: int) -> list[DecodeConfig]:
    if seed is None:
        return [config] * n
    seeds = [seed] * n if isinstance(seed, int) else list(seed)
    if len(seeds) != n or not all(isinstance(s, int) and not isinstance(s, bool)
                                  for s in seeds):
        raise StdecError(f"seed must be an integer or a list of {n} integers, one per prompt; "
                         f"got {seed!r}.")
    return [replace(config, seed=s) for s in seeds]


def generate(model, tokenizer, prompts: str | Sequence[str], config: DecodeConfig | None = None,
             *, chat: bool = False, seed: int | Sequence[int] | None = None,
             images: ImageInput | Sequence | None = None, batch_size: int | None = None,
             on_finish: Callable[[int, str], None] | None = None, system: str | None = None,
             **options) -> Generation:
    """Decode `prompts` (a string or a list) with `config`; keyword options override it.

    `seed` (used when temperature > 0) is one seed for every prompt or a list, one per
    prompt: each prompt samples from its own generator, so the same (prompt, seed) gives
    the same text alone or in any batch.
    `images` (vision-language models): for one prompt, an image or a list; for a list of
    prompts, one entry per prompt. An image is a PIL image, a file path or a base64 data
    URL; it goes where the prompt says "<image>", or at its front.
    `batch_size`: at most this many prompts decode at once (None: all of them); a finished
    prompt's place goes to the next one at once. `on_finish(i, text)` is called as prompt i
    is done, with its text (a progress bar, early results).
    `system`: the system message before each chat prompt; None gives the model's own (LLaDA-V's
    and LaViDa's official one, none for the others), "" none.
    Example: generate(model, tok, "2+3=", policy="stdec", cache="dual", gen_length=64)
    """
    config = with_options(config, options, model_defaults(model))
    single = isinstance(prompts, str)
    prompts = check_prompts(prompts)
    images = check_images(images, prompts, single)
    return generate_each(model, tokenizer, prompts, per_prompt_seeds(config, seed, len(prompts)),
                         chat=chat, images=images, batch_size=batch_size, on_finish=on_finish,
                         system=system)


def generate_each(model, tokenizer, prompts: Sequence[str], configs: Sequence[DecodeConfig], *,
                  chat: bool = False, images: Sequence[list] | None = None,
                  batch_size: int | None = None,
                  on_finish: Callable[[int, str], None] | None = None,
                  system: str | None = None) -> Generation:
    """generate() with one DecodeConfig per prompt (one gen_length for all), every prompt in
    one engine run: the batch entrances (bench, tune, lm-eval) feed it whole sets of prompts
    whose rules or temperatures may differ. `images`: each prompt's loaded images, or None."""
    prompts, configs = check_prompts(list(prompts)), list(configs)
    if len(configs) != len(prompts) or len({c.gen_length for c in configs}) != 1:
        raise StdecError(f"give one DecodeConfig per prompt ({len(prompts)}), all with one "
                         "gen_length.")
    images = [[] for _ in prompts] if images is None else list(images)
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, int) or batch_size < 1):
        raise StdecError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    require_vision(model, sum(map(len, images)))
    for c in dict.fromkeys(configs):
        check_for_model(c, model)
    mc = model.config
    tok_mask = mask_token_id(tokenizer)
    if tok_mask is None:
        raise StdecError(f"the tokenizer has no mask token ({' or '.join(MASK_TOKENS)}); a "
                         "dLLM tokenizer must define it.")
    if tok_mask != mc.mask_token_id:
        raise StdecError(f"the tokenizer's mask id ({tok_mask}) differs from the model's "
                         f"mask_token_id ({mc.mask_token_id}); they must come from one checkpoint.")
    ids = encode(tokenizer, prompts, chat, images if sees_images(model) else None,
                 system=model.system_prompt if system is None else system,
                 drop_after_image=getattr(model, "drop_after_image", False))
    for i, (p, im, c) in enumerate(zip(ids, images, configs, strict=True)):
        length = model.prompt_length(p, im, c.image_mode) if im else len(p)
        if length + c.gen_length > mc.max_sequence_length:
            what = " (with its images)" if im else ""
            raise StdecError(
                f"prompt {i} has {length} tokens{what}; with gen_length {c.gen_length} "
                f"that exceeds the model's max length {mc.max_sequence_length}: shorten one of "
                "them.")
    texts: list[str | None] = [None] * len(prompts)

    def finished(i: int, r):
        texts[i] = tokenizer.decode(r.ids[: r.stats.gen_tokens], skip_special_tokens=True)
        if on_finish is not None:
            on_finish(i, texts[i])

    out = decode(model, ids, configs, eos_ids=end_token_ids(tokenizer), images=images,
                 max_batch=batch_size, on_finish=finished)
    return Generation(texts, out.ids, out.stats, out.trace)
