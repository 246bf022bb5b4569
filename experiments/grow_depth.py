"""Double a LLaDA checkpoint's depth without changing what it computes: a lever probe for the
testbed recipe (does depth let the model learn what it does not?).

    python experiments/grow_depth.py --model testbed --out runs/grown8
    stdec train --init runs/grown8 --n-layers 8 --tasks lists ...   # train the grown model on

Each block is followed by a copy of itself whose two output projections (attention and MLP)
are zero. A zeroed block adds nothing to the residual stream, so the grown model gives the
old model's logits exactly; its copied inputs give those projections useful gradients from
the first step, so training can put the new depth to work.
"""

import argparse
import dataclasses
import shutil
from pathlib import Path

import torch

import stdec
from stdec.api import resolve_model_path
from stdec.errors import StdecError
from stdec.models import save_model
from stdec.models.llada import LLaDAModelLM

ZEROED = ("attn_out.", "ff_out.")  # a block's writes to the residual stream


def grow(old: LLaDAModelLM) -> LLaDAModelLM:
    """A LLaDA of twice the depth: block i becomes block 2i, block 2i+1 is its zeroed copy."""
    cfg = dataclasses.replace(old.config, n_layers=2 * old.config.n_layers)
    state = {}
    for name, value in old.state_dict().items():
        if ".blocks." not in name:
            state[name] = value.clone()
            continue
        prefix, rest = name.split(".blocks.")
        index, param = rest.split(".", 1)
        state[f"{prefix}.blocks.{2 * int(index)}.{param}"] = value.clone()
        copy = torch.zeros_like(value) if param.startswith(ZEROED) else value.clone()
        state[f"{prefix}.blocks.{2 * int(index) + 1}.{param}"] = copy
    new = LLaDAModelLM(cfg)
    new.load_state_dict(state, strict=True)
    return new.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="testbed")
    parser.add_argument("--out", required=True, help="a new folder for the grown checkpoint")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"--out {args.out!r} already exists; name a new folder, so that no "
                         "checkpoint is overwritten.")
    try:
        source = resolve_model_path(args.model)
        old, _ = stdec.load(args.model, dtype="float32", fuse=False)
    except StdecError as e:
        raise SystemExit(str(e)) from None
    if not isinstance(old, LLaDAModelLM):
        raise SystemExit(f"--model {args.model!r} is a {type(old).__name__}; grow_depth.py "
                         "grows LLaDA checkpoints only.")
    new = grow(old)
    save_model(new, out)
    for f in source.iterdir():  # tokenizer, chat template, task lengths; not the old card
        if f.suffix in (".json", ".jinja") and f.name not in ("config.json", "train_log.json"):
            shutil.copy(f, out / f.name)
    print(f"wrote {out}: {new.config.n_layers} blocks (from {old.config.n_layers}); train it "
          f"with --init {out} --n-layers {new.config.n_layers}")


if __name__ == "__main__":
    main()
