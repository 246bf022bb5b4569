"""Training for the vision testbed: a small LLaDA-V (the layout the loader reads) trained with
LLaDA's masked-diffusion objective on the `vision` task's pictures.

Each example is the chat-templated question with its "<image>" (one placeholder id, expanded
into the picture's vectors by the model), the gold answer closed by <|eot_id|> and padded with
EOS to gen_length. A mask ratio t ~ U(eps, 1) per sequence (stratified over the batch), each
response token masked with probability t, cross-entropy on masked tokens weighted by 1/t
(train.py's objective). With --tower-steps, a stage 0 first teaches the tower and projector
to put each cell's contents in the language model's words (pretrain_tower) and then freezes
them and the language model's input embeddings, so that the picture's vectors stay where the
words are and only the language model learns to read; without it all parts train together.
--init starts from a text LLaDA checkpoint (a new tower) or from a vision testbed (its tower
and language model train on, stage 0 aligning the projector again).
Checkpoints are resumable (weights in LLaDA-V layout, optimizer moments, step, log).

    python -m stdec.testbed.train_vision --out /root/stdec-runs/vision --steps 20000
"""

import argparse
import dataclasses
import json
import re
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from stdec.errors import StdecError
from stdec.models import load_model, save_model
from stdec.models.images import IMAGE_PLACEHOLDER
from stdec.models.llada import LLaDAConfig, LLaDAModelLM
from stdec.models.llada_v import IMAGE_TOKEN_INDEX, LLaDAVConfig, LLaDAVModel, to_pixels
from stdec.testbed.config import VisionTrainConfig
from stdec.testbed.suites.vision import COLORS, POSITIONS, SHAPES, SIZE, VisionTask, render
from stdec.testbed.train import STATE, load_state, lr_at, make_optimizer, optimizer_step, save_state

__all__ = ["VisionTrainConfig", "dev_accuracy", "dev_scores", "train_vision"]

COLOR_IDS = {c: i for i, c in enumerate(COLORS)}
# cell_labels' four labels and the words that name each value ("" for none and bar value 0)
LABEL_WORDS = {"shape": ("", *SHAPES), "color": ("", *COLORS),
               "bar": ("", *map(str, range(1, 10))), "cell": POSITIONS}
CELL_LABELS = {name: len(words) for name, words in LABEL_WORDS.items()}  # values each takes


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    from stdec.api import encode_chat

    return encode_chat(tokenizer, [{"role": "user", "content": prompt}],
                       prompt.count(IMAGE_PLACEHOLDER))


def add_words(language_model: LLaDAModelLM, tokenizer, texts: list[str]) -> LLaDAModelLM:
    """Give each word that `texts` use after a space and `tokenizer` splits into pieces a token
    of its own (" yellow", not " y" "e" "ll" "ow"), and the language model rows for it in its
    input embeddings and output layer, started at the mean of its pieces' rows. The text
    testbed's tokenizer never met these words; spelt in pieces, a colour, shape or place is
    several vectors to sum when the projector is aligned with the words, and several tokens to
    get right in one answer. Adds to `tokenizer`; returns the grown language model."""
    words = sorted({w for t in texts for w in re.findall(r" [A-Za-z]+", t)})
    pieces = {w: tokenizer(w, add_special_tokens=False).input_ids for w in words}
    new = [w for w in words if len(pieces[w]) > 1]
    if not new:
        return language_model
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(w, normalized=False) for w in new])
    ids = tokenizer.convert_tokens_to_ids(new)
    size = max(language_model.config.embedding_size, max(ids) + 1)
    grown = LLaDAModelLM(dataclasses.replace(language_model.config, vocab_size=size,
                                             embedding_size=size))
    state = language_model.state_dict()
    for name in ("model.transformer.wte.weight", "model.transformer.ff_out.weight"):
        if name in state:
            rows = torch.cat([state[name], state[name].new_zeros(size - len(state[name]),
                                                                 state[name].shape[1])])
            for w, i in zip(new, ids, strict=True):
                rows[i] = state[name][pieces[w]].mean(0)
            state[name] = rows
    grown.load_state_dict(state)
    return grown


def new_model(cfg: VisionTrainConfig, tokenizer, language_model=None) -> LLaDAVModel:
    """A small LLaDA-V: a new language model, or `language_model`'s weights and shape."""
    if language_model is not None:
        text = language_model.config
    else:
        text = LLaDAConfig(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                           mlp_hidden_size=cfg.mlp_hidden_size, vocab_size=len(tokenizer),
                           max_sequence_length=512, rope_theta=10000.0,
                           mask_token_id=tokenizer.mask_token_id,
                           eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    # one tile per picture (the "square" path of LLaDA-V's preprocessing): with the default
    # 16-pixel patches, one vector per cell of the 48-pixel picture, and the newline
    vision = dict(hidden_size=cfg.vision_hidden, intermediate_size=2 * cfg.vision_hidden,
                  num_hidden_layers=cfg.vision_layers, num_attention_heads=4, image_size=SIZE,
                  patch_size=cfg.patch_size)
    model = LLaDAVModel(LLaDAVConfig(text, vision, image_aspect_ratio="square"))
    if language_model is not None:
        model.language_model.load_state_dict(language_model.state_dict())
    else:
        for name, p in model.named_parameters():  # small init, as in LLaDA
            if p.dim() >= 2 and name.startswith("language_model"):
                torch.nn.init.normal_(p, std=0.02)
    with torch.no_grad():
        model.mm_projector[-1].bias.zero_()  # before the scale is measured, not after it
    match_scale(model)
    with torch.no_grad():
        words = model.language_model.get_input_embeddings().weight.norm(dim=-1).mean()
        model.image_newline.normal_(0, float(words) / text.d_model ** 0.5)
    return model


@torch.no_grad()
def match_scale(model: LLaDAVModel):
    """Scale the projector's output so that a blank picture's vectors have the token
    embeddings' mean norm: a new tower's vectors start as words do, not 20x larger. (In
    training they grow to hundreds of times the words' norm whatever they start at; holding
    them down was measured not to speed learning.)"""
    blank = to_pixels(Image.new("RGB", (SIZE, SIZE), (255, 255, 255)))[None].to(model.device)
    words = model.language_model.get_input_embeddings().weight.norm(dim=-1).mean()
    model.mm_projector[-1].weight.mul_(words / model.encode_images(blank).norm(dim=-1).mean())


def cell_labels(scene: dict) -> list[list[int]]:
    """What each of the 3x3 cells (one patch each, row by row) holds, and where it is:
    [shape, colour, bar value, cell], 0 for none; a bar's colour and value label every cell
    of its column. The cell's own place is a label so that the tower's vectors keep it: the
    language model's rotary positions say only how far apart two tokens are, so "where" and
    "bar B" questions can be answered only from where the vectors say they are."""
    shape, color, value = [0] * 9, [0] * 9, [0] * 9
    if scene["type"] == "shapes":
        for name, c, row, col, _ in scene["objects"]:
            shape[3 * row + col], color[3 * row + col] = 1 + SHAPES.index(name), 1 + COLOR_IDS[c]
    else:
        for col, (v, c) in enumerate(zip(scene["values"], scene["colors"], strict=True)):
            for row in range(3):
                value[3 * row + col], color[3 * row + col] = v, 1 + COLOR_IDS[c]
    return [shape, color, value, list(range(9))]


def word_tables(embed) -> dict[str, torch.Tensor]:
    """For each of cell_labels' labels, a (values, d) table of the vectors of the words that
    name its values, `embed(words)` (zero where no word names it: none, bar value 0)."""
    zero = torch.zeros_like(embed(SHAPES[0]))
    return {label: torch.stack([embed(w) if w else zero for w in words])
            for label, words in LABEL_WORDS.items()}


def embed_words(tokenizer, model: LLaDAVModel):
    """words -> the sum of their tokens' input embeddings in `model`'s language model."""
    table = model.language_model.get_input_embeddings().weight.detach()
    return lambda words: table[tokenizer(f" {words}", add_special_tokens=False).input_ids].sum(0)


def pretrain_tower(model: LLaDAVModel, scenes: list[dict], cfg: VisionTrainConfig, tokenizer,
                   log_to=print) -> None:
    """Stage 0, as LLaDA-V starts from a pretrained SigLIP and aligns its projector before
    the language model learns. The tower learns what each cell holds (shape, colour, bar
    value) and where it is, through a linear head that is then dropped; and the projector
    learns to say it in the language model's words: each cell's vector is pulled toward the
    sum of the embeddings of the words naming it ("red" + "circle" + "top left"). Measured
    with perfect vision in place of the tower (experiments/vision_reading.py), vectors that
    start at their words are read far sooner than vectors that start anywhere else (bar
    values 17/17 against 7/17 after 1000 steps)."""
    sizes = list(CELL_LABELS.values())
    dev = model.device
    head = torch.nn.Linear(model.vision_tower.config.hidden_size, sum(sizes)).to(dev)
    tables = {k: t.to(dev) for k, t in word_tables(embed_words(tokenizer, model)).items()}
    scale = float(torch.cat(list(tables.values())).norm(dim=-1).square().mean())
    params = [*model.vision_tower.parameters(), *model.mm_projector.parameters(),
              *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.tower_steps):
        pick = torch.randint(len(scenes), (64,), generator=gen).tolist()
        pixels = torch.stack([to_pixels(render(scenes[i])) for i in pick]).to(dev)
        labels = torch.tensor([cell_labels(scenes[i]) for i in pick], device=dev)  # (B, 4, 9)
        hidden = model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]
        logits = head(hidden).split(sizes, dim=-1)
        words = sum(tables[k][labels[:, i]] for i, k in enumerate(CELL_LABELS))  # (B, 9, d)
        # the projector as encode_images applies it (the tower's last hidden state)
        off = (model.mm_projector(hidden) - words).square().sum(-1).mean() / scale
        loss = off + sum(F.cross_entropy(part.flatten(0, 1), labels[:, k].flatten())
                         for k, part in enumerate(logits))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step + 1 == cfg.tower_steps:
            right = [(part.argmax(-1) == labels[:, k]).float().mean().item()
                     for k, part in enumerate(logits)]
            log_to(json.dumps({"tower_step": step + 1, "loss": loss.item(),
                               "off_words": off.item(),
                               "cells_right": dict(zip(CELL_LABELS, right, strict=True))}))


def encode(tokenizer, problems) -> list[tuple[list[int], list[int]]]:
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    return [(prompt_ids(tokenizer, p.prompt),
             tokenizer(p.answer, add_special_tokens=False).input_ids + [eot]) for p in problems]


def batch_inputs(model: LLaDAVModel, rows: list[tuple[list[int], list[int]]], scenes: list,
                 pad: int, eos: int, R: int):
    """(ids with image rows expanded, positions, key mask, P) for left-padded prompts and
    EOS-padded responses, and the feature table of the batch's pictures (with grad)."""
    dev = model.device
    pixels = torch.stack([to_pixels(render(s)) for s in scenes]).to(dev)
    feats = model.encode_images(pixels)  # (B, patches, d)
    newline = model.image_newline.expand(len(rows), 1, -1)
    table = torch.cat([feats, newline], 1)  # (B, patches + 1, d): as LLaDA-V lays it
    n = table.shape[1]
    prompts = []
    for b, (p, _) in enumerate(rows):
        k = p.index(IMAGE_TOKEN_INDEX)
        prompts.append(p[:k] + list(range(-1 - b * n, -1 - (b + 1) * n, -1)) + p[k + 1:])
    P = max(map(len, prompts))
    x = torch.full((len(rows), P + R), eos)
    for b, (p, (_, a)) in enumerate(zip(prompts, rows, strict=True)):
        x[b, P - len(p):P] = torch.tensor(p)
        x[b, :P - len(p)] = pad
        x[b, P:P + min(R, len(a))] = torch.tensor(a[:R])
    n_pad = torch.tensor([P - len(p) for p in prompts])[:, None]
    cols = torch.arange(P + R)[None]
    return (x.to(dev), (cols - n_pad).clamp(min=0).to(dev), (cols >= n_pad).to(dev), P,
            table.flatten(0, 1))


def loss_at(model, rows, scenes, ids: dict, R: int, gen: torch.Generator) -> torch.Tensor:
    x, pos, keys, P, table = batch_inputs(model, rows, scenes, ids["pad"], ids["eos"], R)
    B = len(rows)
    u = (torch.arange(B) + torch.rand(B, generator=gen))[torch.randperm(B, generator=gen)] / B
    t = ((1 - 1e-3) * u + 1e-3)[:, None]
    masked = torch.rand(B, R, generator=gen) < t
    t, masked = t.to(x.device), masked.to(x.device)  # drawn on the CPU: the same on any device
    target = x[:, P:].clone()
    x[:, P:] = target.masked_fill(masked, ids["mask"])
    logits = model(x, image_features=table, position_ids=pos, attention_mask=keys,
                   logits_slice=slice(P, None))
    ce = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="none")
    return (ce.view_as(target) * masked / t).sum() / target.numel()


def dev_accuracy(model: LLaDAVModel, tokenizer, task: VisionTask, split: str = "dev",
                 limit: int = 100, gen_length: int = 32, **decode_options) -> float:
    """Accuracy on `split` with vanilla decoding (fixed, one token a step) unless told."""
    right = dev_scores(model, tokenizer, task, split, limit, gen_length, **decode_options)
    return sum(right) / len(right)


@torch.no_grad()
def dev_scores(model: LLaDAVModel, tokenizer, task: VisionTask, split: str = "dev",
               limit: int = 100, gen_length: int = 32, **decode_options) -> list[bool]:
    """Whether each of the first `limit` problems of `split` is answered right."""
    from stdec.decoding.config import build
    from stdec.decoding.engine import decode
    from stdec.decoding.registry import VANILLA_OPTIONS

    problems = task.problems(split)[:limit]
    # vanilla decoding, one block, unless decode_options say otherwise
    cfg = build({"cache": "dual", "gen_length": gen_length, "block_length": gen_length,
                 **decode_options}, VANILLA_OPTIONS)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    out = decode(model, [prompt_ids(tokenizer, p.prompt) for p in problems], cfg, eos_ids=[eot],
                 images=[[render(p.meta["scene"])] for p in problems])
    texts = [tokenizer.decode(r.tolist(), skip_special_tokens=True) for r in out.ids]
    return [task.score(p, t) for p, t in zip(problems, texts, strict=True)]


def train_vision(cfg: VisionTrainConfig, *, log_to=print) -> Path:
    from stdec.models import resolve_device
    from stdec.testbed.tokenizer import train_tokenizer

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device or None)
    out, ckpt = Path(cfg.out), Path(cfg.out) / "checkpoint"
    task = VisionTask({"train": cfg.train_size})
    train = task.problems("train")
    texts = [t for p in train for t in (p.prompt, p.answer)]
    resumed = (ckpt / f"{STATE}.json").is_file()
    if resumed:
        from transformers import PreTrainedTokenizerFast

        model = load_model(ckpt, device=device)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(ckpt))
    elif cfg.init:
        from stdec.api import load

        start, tokenizer = load(cfg.init, dtype="float32", device="cpu", fuse=False)
        if isinstance(start, LLaDAVModel):
            # a vision testbed trained on: its tower and language model go on as they are,
            # and stage 0 aligns the projector again with the words as they are now
            model = start.to(device)
        elif isinstance(start, LLaDAModelLM):
            model = new_model(cfg, tokenizer, add_words(start, tokenizer, texts)).to(device)
        else:
            raise StdecError(f"--init {cfg.init!r} is a {type(start).__name__}; the vision "
                             "testbed starts from a text LLaDA checkpoint or a LLaDA-V one.")
    else:
        tokenizer = train_tokenizer(texts, vocab_size=cfg.vocab_size)
        model = new_model(cfg, tokenizer).to(device)
    if cfg.tower_steps:
        if not resumed:
            pretrain_tower(model, [p.meta["scene"] for p in train], cfg, tokenizer, log_to)
        # then the tower and projector stay as stage 0 left them: trained on with the language
        # model at lr 1e-3, the picture's vectors grew to 600x their words' norm within 1000
        # steps (cosine to their words 0.19) and the alignment was lost. So do the words'
        # input embeddings: trained on (gradient and weight decay), after 6000 steps the
        # picture's vectors had cosine 0.55 to their words' embeddings (0.49 on shape scenes)
        model.vision_tower.requires_grad_(False)
        model.mm_projector.requires_grad_(False)
        model.language_model.get_input_embeddings().requires_grad_(False)
    examples = encode(tokenizer, train)
    ids = {"pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id,
           "mask": tokenizer.mask_token_id}
    optimizer = make_optimizer(model, cfg)
    step, log = load_state(ckpt, model, optimizer) if resumed else (0, [])
    model.train()
    start, losses = time.perf_counter() - (log[-1]["elapsed_s"] if log else 0.0), []
    while step < cfg.steps:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        pick = torch.randint(len(train), (cfg.batch_size,), generator=gen).tolist()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = loss_at(model, [examples[i] for i in pick], [train[i].meta["scene"] for i in pick],
                       ids, cfg.gen_length, gen)
        optimizer_step(model, optimizer, loss)
        step += 1
        losses.append(loss.item())
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):  # 0: never
            model.eval()
            acc = dev_accuracy(model, tokenizer, task, limit=cfg.eval_limit,
                               gen_length=cfg.gen_length)
            model.train()
            log.append({"step": step, "loss": sum(losses[-200:]) / len(losses[-200:]),
                        "dev": acc, "elapsed_s": time.perf_counter() - start})
            log_to(json.dumps(log[-1]))
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_state(ckpt, model, optimizer, step, cfg, log)
            tokenizer.save_pretrained(str(ckpt))
    save_model(model, out)
    tokenizer.save_pretrained(str(out))
    from stdec.util import hardware

    record = {"config": asdict(cfg), "hardware": hardware(device), "log": log}
    (out / "train_log.json").write_text(json.dumps(record, indent=1))
    return out


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in fields(VisionTrainConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default),
                            default=f.default)
    train_vision(VisionTrainConfig(**vars(parser.parse_args(argv))),
                 log_to=lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()
