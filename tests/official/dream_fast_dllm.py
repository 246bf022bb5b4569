"""Generate tests/fixtures/official/dream_fast_dllm/ from Fast-dLLM's own Dream code.

    python tests/official/dream_fast_dllm.py /path/to/Fast-dLLM   # a checkout, or its git dir

Runs NVlabs/Fast-dLLM's dream/model (modeling_dream.py, generation_utils_block.py) at tiny
random weights: its block generation with the prefix cache (`use_cache`) and the dual cache,
under both of its rules (`alg="confidence_threshold"`, and the steps path that any other
alg takes). For each case it stores the generated ids, the forward (from 1) after which
each generated position was first unmasked, and the number of forwards. The weights are
saved as safetensors in the official model's tensor names (Dream's, which stdec reads).

The official files are copied to a temporary folder at generation time; nothing of them is
kept. Three shims let them run under transformers 5 (they were written for 4.4x): the
removed "default" rotary initialiser (inv_freq = 1 / theta^(2i/d), scaling 1), the removed
`rope_config_validation`, and DreamGenerationConfig.validate taking the keywords that
transformers 5's GenerationConfig.update passes it (it checks nothing either way). The
snapshot's commit is stored beside the results.
"""

import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "official" / "dream_fast_dllm"
FILES = ["__init__.py", "configuration_dream.py", "modeling_dream.py", "generation_utils.py",
         "generation_utils_block.py"]
MASK, EOS = 2, 1
SIZE = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=128, rope_theta=10000.0,
            rms_norm_eps=1e-6, mask_token_id=MASK, pad_token_id=EOS, eos_token_id=EOS,
            bos_token_id=None, tie_word_embeddings=False)
PROMPTS = [[5, 9, 33, 7, 61, 54, 8], [70, 12, 40, 41, 3]]
GEN, BLOCK = 24, 8
TAU = 0.9
SHRINK = 0.9  # the mask id's output row: 0.9 x the favourite token's
# the steps path: steps over the whole answer (3 blocks), so 8 and 4 forwards a block
CASES = [dict(alg="confidence_threshold", steps=GEN // BLOCK, threshold=TAU),
         dict(alg="entropy", steps=GEN), dict(alg="entropy", steps=GEN // 2)]


def extract(source: str, to: Path):
    """dream/model/* of the snapshot at `source` (a work tree or a git dir) into `to`/model."""
    (to / "model").mkdir()
    for name in FILES:
        src = Path(source) / "dream" / "model" / name
        if src.exists():
            text = src.read_text()
        else:
            text = subprocess.run(["git", "--git-dir", source, "show", f"HEAD:dream/model/{name}"],
                                  check=True, capture_output=True, text=True).stdout
        (to / "model" / name).write_text(text)


def commit_of(source: str) -> str:
    for flag in (["--git-dir", source], ["-C", source]):
        done = subprocess.run(["git", *flag, "rev-parse", "HEAD"], capture_output=True, text=True)
        if done.returncode == 0:
            return done.stdout.strip()
    return "unknown"


def shim_transformers():
    import transformers.modeling_rope_utils as rope

    def default_rope(config, device=None, seq_len=None, **_):
        dim = config.hidden_size // config.num_attention_heads
        exps = torch.arange(0, dim, 2, dtype=torch.int64).float().to(device) / dim
        return 1.0 / config.rope_theta ** exps, 1.0

    rope.ROPE_INIT_FUNCTIONS.setdefault("default", default_rope)
    if not hasattr(rope, "rope_config_validation"):
        rope.rope_config_validation = lambda config: None


def shim_generation_config():
    from model import generation_utils, generation_utils_block
    for module in (generation_utils, generation_utils_block):
        module.DreamGenerationConfig.validate = lambda self, *args, **kwargs: None


def tiny_model(kv_heads: int, seed: int):
    from model import DreamConfig, DreamModel
    torch.manual_seed(seed)
    model = DreamModel(DreamConfig(**SIZE, num_key_value_heads=kv_heads)).eval()
    with torch.no_grad():  # random weights of a useful scale; a peaked output head
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5)
        model.lm_head.weight.mul_(12.0)
        # the mask id takes some probability mass (so that a softmax without it would commit
        # otherwise) but is never an argmax: its output row is a shrunk copy of the row of
        # the token predicted most often on a probe
        probe = torch.tensor([PROMPTS[0] + [MASK] * GEN])
        favourite = model(probe, "full", None).logits.argmax(-1).flatten().mode().values
        model.lm_head.weight[MASK] = SHRINK * model.lm_head.weight[favourite]
    return model


def recorded_generate(model, prompt: list[int], case: dict, dual: bool):
    """(ids, commit forward of each generated position, forwards) of one official decode."""
    from model.generation_utils_block import DreamGenerationMixin
    # bound as Fast-dLLM's dream/eval.py binds them when use_cache is set
    model.diffusion_generate = types.MethodType(DreamGenerationMixin.diffusion_generate, model)
    model._sample = types.MethodType(DreamGenerationMixin._sample, model)
    P, T = len(prompt), len(prompt) + GEN
    seen = torch.full((T,), MASK)
    seen[:P] = torch.tensor(prompt)
    born = torch.full((GEN,), -1)
    calls = []
    forward = model.forward

    def watched(input_ids, *args, **kwargs):
        # what this forward is fed shows the commits of the forward before it
        L = input_ids.shape[1]
        rp = kwargs.get("replace_position")
        start = 0 if L == T else (int(rp[0].nonzero()[0]) if rp is not None else T - L)
        note(input_ids[0], start, len(calls))
        out = forward(input_ids, *args, **kwargs)
        top = out.logits.argmax(-1)
        assert not (top == MASK).any(), "the mask id was an argmax: pick another seed"
        calls.append(start)
        return out

    def note(ids, start, n):
        view = ids.clone()
        new = (seen[start : start + len(view)] == MASK) & (view != MASK)
        pos = torch.arange(start, start + len(view))[new]
        assert (pos >= P).all()
        born[pos - P] = n
        seen[start : start + len(view)] = view

    from model.generation_utils import DreamGenerationConfig
    model.generation_config = DreamGenerationConfig(
        mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS, bos_token_id=EOS)
    model.forward = watched
    out = model.diffusion_generate(
        torch.tensor([prompt]), generation_config=model.generation_config, max_new_tokens=GEN,
        steps=case["steps"], alg=case["alg"],
        threshold=case.get("threshold", 0.9), block_length=BLOCK, dual_cache=dual,
        temperature=0.0, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS,
        output_history=False, return_dict_in_generate=True)
    del model.forward
    ids = out.sequences[0]
    note(ids, 0, len(calls))
    assert (ids != MASK).all() and (born >= 1).all()
    return ids[P:].tolist(), born.tolist(), len(calls)


def main(source: str):
    with tempfile.TemporaryDirectory() as tmp:
        extract(source, Path(tmp))
        sys.path.insert(0, tmp)
        shim_transformers()
        shim_generation_config()
        OUT.mkdir(parents=True, exist_ok=True)
        results = []
        for kv_heads in (1, 2, 4):
            model = tiny_model(kv_heads, seed=kv_heads)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      OUT / f"kv{kv_heads}.safetensors")
            with torch.no_grad():
                for case in CASES:
                    for cache in ("prefix", "dual"):
                        for prompt in PROMPTS:
                            ids, born, nfe = recorded_generate(model, prompt, case,
                                                               cache == "dual")
                            results.append(dict(kv_heads=kv_heads, cache=cache, prompt=prompt,
                                                **case, ids=ids, commits=born, nfe=nfe))
    meta = dict(fast_dllm_commit=commit_of(source), config=SIZE, gen_length=GEN,
                block_length=BLOCK, results=results)
    (OUT / "reference.json").write_text(json.dumps(meta, indent=0) + "\n")
    for r in results:
        print(r["kv_heads"], r["cache"], r["alg"], r["steps"], "nfe", r["nfe"],
              "commits", r["commits"])


if __name__ == "__main__":
    main(sys.argv[1])
