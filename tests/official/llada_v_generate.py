"""Reference outputs of LLaDA-V's official code (github.com/ML-GSAI/LLaDA-V) for
tests/test_llada_v_generate.py, written to tests/fixtures/official/llada_v_generate/.

    HF_HUB_OFFLINE=1 PYTHONPATH=src python tests/official/llada_v_generate.py LLADA_V

LLADA_V is a clone of ML-GSAI/LLaDA-V, or a bare git directory of it. The few official files
used are copied out to a temporary folder and imported from there (the dLLM-Cache hooks and
video helpers they import are stubbed: nothing here uses them); none of them enter stdec.

What it records:
- generate: the official `generate_with_embeds` (model/language_model/modeling_llada.py),
  greedy, no cache, low-confidence remasking, with steps = gen_length and steps < gen_length,
  run over stdec's own tiny LLaDA-V: its prompt embeddings (an image's vectors included) and
  its language model's forward stand in for the official model's, whose agreement with
  stdec's is tested apart. It records the ids and the forward at which each position was
  committed (read from the embeddings each forward is given).
  The tiny model has LLaDA's real vocabulary (126464), since the official code names its
  four suppressed ids (126081, 126080, 126346, 126347) and the mask id 126336 outright. To
  keep the fixture small, only a few hundred rows of the input embeddings and of the output
  head are nonzero (SPARSE ids); the rows of those four ids are scaled up, so that without
  their suppression they would win at many positions.
- prompts: the official conversation template conv_llava_llada (conversation.py) and
  tokenizer_image_token (mm_utils.py) over a small byte-level tokenizer with LLaDA's special
  tokens and LLaDA-V's chat template (from llada_v_prepare/files/tokenizer_config.json).
"""

import copy
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from stdec.models.llada_v import IMAGE_TOKEN_INDEX
from stdec.testbed.tokenizer import train_tokenizer
from stdec.testing import DEMO_TEXT, random_llava_model, tiny_llava_config

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "official" / "llada_v_generate"
FILES = ["llava/model/language_model/modeling_llada.py",
         "llava/model/language_model/configuration_llada.py",
         "llava/mm_utils.py", "llava/conversation.py", "llava/constants.py"]
TOKENIZER_CONFIG = "llada_v_prepare/files/tokenizer_config.json"
STUBS = {
    "llava/cache/__init__.py": "class dLLMCache:\n    def reset_cache(self, *a, **k):\n"
                               "        pass\n\n\nclass dLLMCacheConfig:\n    pass\n",
    "llava/utils.py": "def rank0_print(*a, **k):\n    pass\n\n\n"
                      "process_video_with_pyav = process_video_with_decord = None\n",
}
VOCAB, MASK, EOS = 126464, 126336, 126081
SPECIAL = [126080, 126081, 126346, 126347, 126348, MASK]  # BOS, EOS, headers, <|eot_id|>
SPARSE = sorted({*range(200), *SPECIAL})
PROMPTS = {  # ids among SPARSE; IMAGE_TOKEN_INDEX where the image goes
    "image": [126080, 11, 12, 13, IMAGE_TOKEN_INDEX, 14, 15, 16, 17],
    "text": [126080, 21, 22, 23, 24, 25],
}
CASES = [  # (gen_length, block_length, steps)
    (16, 16, 16),  # steps = gen_length, one block (the demo's shape)
    (16, 8, 8),  # two blocks, two tokens a step
    (16, 8, 6),  # two blocks, 3, 3 then 2 tokens a step (LLaDA's uneven schedule)
]
QUESTIONS = {  # chat prompts for tokenizer_image_token
    "one image": ("<image>\nWhat is the sum of 3 and 4?", 1),
    "two images": ("<image>\n<image>\nSort the list [3, 1, 2].", 2),
    "image inside": ("Look: <image> then def add(a, b):", 1),
    "text only": ("The quick brown fox jumps over the lazy dog.", 0),
}


def read(snapshot: Path, path: str) -> str:
    """`train/<path>` of the official repository, from a work tree or a git directory."""
    if (snapshot / "train" / path).is_file():
        return (snapshot / "train" / path).read_text()
    git = ["git", f"--git-dir={snapshot}", "show", f"HEAD:train/{path}"]
    return subprocess.run(git, check=True, capture_output=True, text=True).stdout


def import_official(snapshot: Path, where: Path):
    for path in FILES:
        (where / path).parent.mkdir(parents=True, exist_ok=True)
        (where / path).write_text(read(snapshot, path))
    for path, text in STUBS.items():
        (where / path).parent.mkdir(parents=True, exist_ok=True)
        (where / path).write_text(text)
    for package in ["llava", "llava/model", "llava/model/language_model"]:
        (where / package / "__init__.py").touch()
    sys.path.insert(0, str(where))
    from llava import conversation, mm_utils
    from llava.model.language_model import modeling_llada

    return modeling_llada, mm_utils, conversation


def tiny_model():
    """stdec's tiny LLaDA-V at LLaDA's vocabulary, rows outside SPARSE zero."""
    cfg = tiny_llava_config(d_model=32, n_heads=4, mlp_hidden_size=64, vocab_size=VOCAB,
                            mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS)
    model = random_llava_model(cfg, seed=0)
    lm = model.language_model.model.transformer
    g = torch.Generator().manual_seed(1)
    keep = torch.zeros(VOCAB, dtype=torch.bool)
    keep[SPARSE] = True
    with torch.no_grad():
        lm.wte.weight[~keep] = 0
        lm.ff_out.weight.zero_()
        lm.ff_out.weight[SPARSE] = torch.randn(len(SPARSE), 32, generator=g)
        lm.ff_out.weight[MASK] = 0  # a mask row of 0: the official argmax may pick the mask
        # the four suppressed ids take the rows of the ids that win most often on fully masked
        # answers, raised a little: without their suppression they would win there
        wins = torch.cat([first_predictions(model, p) for p in PROMPTS.values()])
        top = torch.bincount(wins, minlength=VOCAB).argsort(descending=True)[:4]
        for i, (sid, w) in enumerate(zip(SPECIAL[:4], top.tolist(), strict=True)):
            lm.ff_out.weight[sid] = lm.ff_out.weight[w] * (1.1 - 0.05 * i)
    return model.eval()


def first_predictions(model, prompt: list[int], gen: int = 16) -> torch.Tensor:
    """The argmax at each masked position of `prompt` with `gen` masks, nothing decoded."""
    images = [image()] if IMAGE_TOKEN_INDEX in prompt else []
    embeds, _ = model.embed_prompt(prompt + [MASK] * gen, images)
    ids = torch.zeros(embeds.shape[:2], dtype=torch.long)
    return model.language_model(ids, inputs_embeds=embeds)[0, -gen:].argmax(-1)


def save_model(model, folder: Path):
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if not k.endswith("position_ids")}
    for name in ("wte", "ff_out"):
        key = f"language_model.model.transformer.{name}.weight"
        state[key] = state[key][SPARSE].clone()
    state["sparse_ids"] = torch.tensor(SPARSE)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1) + "\n")


def image() -> Image.Image:
    pixels = np.random.RandomState(0).randint(0, 256, (24, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)  # 40 x 24: anyres picks a grid of tiles


def official_generate(modeling, model, prompt: list[int], images, gen: int, block: int,
                      steps: int) -> tuple[list[int], list[int]]:
    """The official generate_with_embeds over stdec's embeddings and language model: the ids
    and, for each position, the forward (from 1) that committed it."""
    lm = model.language_model
    seen: list[torch.Tensor] = []

    class Backbone:  # what generate_with_embeds calls as self.model
        embed_tokens = lm.get_input_embeddings()

        def __call__(self, inputs_embeds):
            seen.append(inputs_embeds.detach().clone())
            ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long)
            return (lm(ids, inputs_embeds=inputs_embeds),)

    class Official:
        generate_with_embeds = modeling.LLaDAModelLM.generate_with_embeds
        get_num_transfer_tokens = staticmethod(modeling.LLaDAModelLM.get_num_transfer_tokens)
        add_gumbel_noise = staticmethod(modeling.LLaDAModelLM.add_gumbel_noise)
        model = Backbone()
        lm_head = torch.nn.Identity()  # the backbone already gives logits

    embeds, _ = model.embed_prompt(prompt, images)
    with torch.no_grad():
        out = Official().generate_with_embeds(embeds, steps=steps, gen_length=gen,
                                              block_length=block, temperature=0.0,
                                              remasking="low_confidence", mask_id=MASK)
    P = embeds.shape[1]
    masked_embed = lm.get_input_embeddings().weight[MASK]
    masked = [torch.all((e[0, P:] - masked_embed).abs() < 1e-5, dim=-1) for e in seen]
    step = []
    for g in range(gen):  # committed by the forward before the first that sees it decoded
        later = [n for n, m in enumerate(masked) if not m[g]]
        step.append(later[0] if later else len(seen))
    return out[0].tolist(), step


def prompts(mm_utils, conversation, template: str) -> dict:
    """The official chat prompts (conv_llava_llada) and their ids (tokenizer_image_token)."""
    tokenizer = train_tokenizer(DEMO_TEXT * 8, vocab_size=300)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(str(OUT / "tokenizer"))
    out = {}
    for name, (question, n) in QUESTIONS.items():
        conv = copy.deepcopy(conversation.conv_templates["llava_llada"])
        conv.tokenizer = tokenizer
        conv.append_message(conv.roles[0], question)
        conv.append_message(conv.roles[1], None)
        text = conv.get_prompt()
        ids = mm_utils.tokenizer_image_token(text, tokenizer, IMAGE_TOKEN_INDEX)
        out[name] = {"question": question, "images": n, "text": text, "ids": ids}
    return out


def main(snapshot: str):
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        modeling, mm_utils, conversation = import_official(Path(snapshot), Path(tmp))
        source = Path(modeling.__file__).read_text()
        suppressed = re.search(r"for token_id in \[([\d, ]+)\]:", source).group(1)
        model = tiny_model()
        save_model(model, OUT)
        img = image()
        img.save(OUT / "image.png")
        runs = []
        for name, prompt in PROMPTS.items():
            images = [img] if IMAGE_TOKEN_INDEX in prompt else []
            for gen, block, steps in CASES:
                ids, step = official_generate(modeling, model, prompt, images, gen, block, steps)
                runs.append({"prompt": name, "gen_length": gen, "block_length": block,
                             "steps": steps, "ids": ids, "step": step})
        template = json.loads(read(Path(snapshot), TOKENIZER_CONFIG))["chat_template"]
        reference = {
            "suppressed": [int(i) for i in suppressed.split(",")],
            "system": conversation.conv_templates["llava_llada"].system,
            "prompts": PROMPTS, "runs": runs,
            "chat": prompts(mm_utils, conversation, template),
        }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
