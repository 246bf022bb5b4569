"""Is it the tower or the language model? The vision testbed's recipe with reading made easy.

    python experiments/vision_reading.py --feed codes --steps 1000
    python experiments/vision_reading.py --feed text --steps 1000
    python experiments/vision_reading.py --feed pixels --steps 1000

Each starts a vision testbed from `--init` (the text testbed) and trains it with
train_vision's objective, printing dev accuracy (vanilla decoding) as it goes. What the
language model is given in place of the picture:
- pixels: the picture through a new tower and projector, as `stdec train --tasks vision
  --init testbed` without the tower stage;
- codes: perfect vision. Each cell's vector is the sum of learned codes for what the cell
  holds (shape, colour, bar value), where it is and the kind of scene; no tower. With
  --codes-from words the codes start at the embeddings of their words ("red", "circle", "7",
  "top left"), as a projector aligned with the language model would give them;
- text: the scene written out in the prompt after the picture ("Objects: red circle at top
  left; ..."), the picture's vectors zero.
All feeds keep the text testbed's tokenizer as it is (the recipe now adds the task's words
to it; the README's figures were measured without). If codes and text stay as low as pixels,
the language model is what learns slowly. The last evaluation is also split by kind of
question.
"""

import argparse
import dataclasses
import hashlib
import time

import torch
from torch import nn

from stdec.api import load
from stdec.models.llada_v import to_pixels
from stdec.testbed.suites.vision import VisionTask, position, render
from stdec.testbed.train import lr_at, make_optimizer, optimizer_step
from stdec.testbed.train_vision import (
    CELL_LABELS,
    VisionTrainConfig,
    cell_labels,
    dev_scores,
    embed_words,
    encode,
    loss_at,
    new_model,
    word_tables,
)


def describe(scene: dict) -> str:
    """The scene in words, as --feed text writes it into the prompt."""
    if scene["type"] == "shapes":
        return "Objects: " + "; ".join(f"{color} {shape} at {position(row, col)}"
                                       for shape, color, row, col, _ in scene["objects"]) + "."
    return "Bars: " + ", ".join(f"{label}={value} {color}" for label, value, color in
                                zip(scene["labels"], scene["values"], scene["colors"],
                                    strict=True)) + "."


class SceneCodes(nn.Module):
    """(9, d) vectors for a scene, one per cell: codes of what the cell holds and where it is
    (train_vision.cell_labels: shape, colour, bar value, cell; 0 for none) and of the kind of
    scene, summed."""

    def __init__(self, d: int, scale: float):
        super().__init__()
        sizes = {**CELL_LABELS, "kind": 2}
        self.codes = nn.ModuleDict({k: nn.Embedding(n, d) for k, n in sizes.items()})
        for table in self.codes.values():  # five codes summed: about the words' norm
            nn.init.normal_(table.weight, std=scale / (5 * d) ** 0.5)

    @torch.no_grad()
    def start_from_words(self, embed):
        """Each code set to `embed(words)` of the words that name it (train_vision.word_tables:
        a place's two words summed); "nothing here", bar value 0 and the kind of scene start
        at zero."""
        self.codes["kind"].weight.zero_()
        for label, table in word_tables(embed).items():
            self.codes[label].weight.copy_(table)

    def forward(self, scene: dict) -> torch.Tensor:
        labels = torch.tensor(cell_labels(scene))  # (4, 9)
        kind = torch.full((9,), int(scene["type"] == "bars"))
        return sum(self.codes[name](row) for name, row in zip(CELL_LABELS, labels, strict=True)) \
            + self.codes["kind"](kind)


class Scenes:
    """The scene each rendered picture shows, found again from its pixels (training and
    decoding hand the model pixels only)."""

    def __init__(self):
        self.by_digest: dict[str, dict] = {}

    @staticmethod
    def digest(pixels: torch.Tensor) -> str:
        return hashlib.sha1(pixels.cpu().numpy().tobytes()).hexdigest()

    def add(self, problems):
        for p in problems:
            scene = p.meta["scene"]
            self.by_digest.setdefault(self.digest(to_pixels(render(scene))), scene)

    def __getitem__(self, pixels: torch.Tensor) -> dict:
        return self.by_digest[self.digest(pixels)]


class Fixed(VisionTask):
    """The vision task over given problem lists (the --feed text prompts)."""

    def __init__(self, splits: dict):
        super().__init__()
        self.splits = splits

    def problems(self, split: str):
        return self.splits[split]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feed", choices=("pixels", "codes", "text"), required=True)
    parser.add_argument("--codes-from", choices=("random", "words"), default="random",
                        help="--feed codes: where the codes start")
    parser.add_argument("--init", default="testbed")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-limit", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.eval_limit < 1:
        parser.error("--steps and --eval-limit must be at least 1.")
    if args.codes_from == "words" and args.feed != "codes":
        parser.error("--codes-from words is for --feed codes; leave it out.")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = VisionTrainConfig(steps=args.steps, lr=args.lr, warmup=50, vision_hidden=128,
                            batch_size=args.batch_size, init=args.init)
    base = VisionTask()
    train, dev = base.problems("train"), base.problems("dev")[: args.eval_limit]
    if args.feed == "text":
        def spell(p):
            return dataclasses.replace(
                p, prompt=p.prompt.replace("<image>\n", f"<image>\n{describe(p.meta['scene'])}\n"))
        train, dev = [spell(p) for p in train], [spell(p) for p in dev]
    task = Fixed({"train": train, "dev": dev})
    language_model, tokenizer = load(args.init, dtype="float32", device="cpu", fuse=False)
    model = new_model(cfg, tokenizer, language_model)
    scenes = Scenes()
    if args.feed != "pixels":
        wte = model.language_model.get_input_embeddings().weight
        # a submodule, so the optimizer trains it with the rest
        model.scene_codes = SceneCodes(wte.shape[1], wte.norm(dim=-1).mean().item())
        if args.codes_from == "words":
            model.scene_codes.start_from_words(embed_words(tokenizer, model))
        scale = float(args.feed == "codes")  # text: the picture's vectors are zero

        def encode_images(pixels):
            return torch.stack([model.scene_codes(scenes[p]) for p in pixels]) * scale

        model.encode_images = encode_images
        scenes.add(dev)
    examples = encode(tokenizer, train)
    ids = {"pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id,
           "mask": tokenizer.mask_token_id}
    optimizer = make_optimizer(model, cfg)
    model.train()
    start = time.perf_counter()
    for step in range(args.steps):
        gen = torch.Generator().manual_seed(step)
        pick = torch.randint(len(train), (args.batch_size,), generator=gen).tolist()
        scenes.add([train[i] for i in pick])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = loss_at(model, [examples[i] for i in pick], [train[i].meta["scene"] for i in pick],
                       ids, cfg.gen_length, gen)
        optimizer_step(model, optimizer, loss)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            model.eval()
            right = dev_scores(model, tokenizer, task, limit=args.eval_limit)
            model.train()
            print(f"{args.feed} step {step + 1}: loss {loss.item():.3f} dev "
                  f"{100 * sum(right) / len(right):.1f}% ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    by_kind: dict[str, list[bool]] = {}
    for p, ok in zip(dev, right, strict=True):
        by_kind.setdefault(f"{p.meta['kind']} ({p.meta['scene']['type']})", []).append(ok)
    for kind, oks in sorted(by_kind.items()):
        print(f"  {kind:18s} {100 * sum(oks) / len(oks):5.1f}% ({sum(oks)}/{len(oks)})")


if __name__ == "__main__":
    main()
