"""LLaDA-V decodes and builds prompts as its official code does (github.com/ML-GSAI/LLaDA-V),
against outputs that tests/official/llada_v_generate.py recorded from that code:

- greedy generation: the fixed rule without a cache, with the LLaDA-V preset's suppressed
  ids, gives the official generate_with_embeds' ids and commit order, with steps = gen_length
  and with steps < gen_length. The official function ran over stdec's own tiny LLaDA-V (its
  prompt embeddings and its language model's forward), so this checks the decoding; the
  model's logits are checked against the official classes apart.
- prompts: conv_llava_llada's system message and tokenizer_image_token's ids, over a small
  tokenizer with LLaDA's special tokens and LLaDA-V's chat template.
"""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import stdec.api
from stdec.api import encode
from stdec.decoding.config import build
from stdec.decoding.defaults import checkpoint_defaults
from stdec.decoding.engine import decode
from stdec.errors import StdecError
from stdec.models.llada_v import IMAGE_TOKEN_INDEX, LLaDAVConfig, LLaDAVModel
from stdec.models.presets import LLADA_V_SUPPRESS, LLADA_V_SYSTEM, PRESETS
from stdec.testing import random_llava_checkpoint, random_llava_model, tiny_llava_config

HERE = Path(__file__).parent / "fixtures" / "official" / "llada_v_generate"
REF = json.loads((HERE / "reference.json").read_text())
RUNS = REF["runs"]


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    cfg = LLaDAVConfig.from_dict(json.loads((HERE / "config.json").read_text()))
    state = load_file(str(HERE / "model.safetensors"))
    ids = state.pop("sparse_ids")
    m = LLaDAVModel(cfg)
    for name in ("wte", "ff_out"):  # rows outside sparse_ids are zero
        key = f"language_model.model.transformer.{name}.weight"
        full = torch.zeros(cfg.embedding_size, state[key].shape[1])
        full[ids] = state[key]
        state[key] = full
    m.load_state_dict(state, strict=False)
    return m.eval()


def official_options(run: dict, **over) -> dict:
    return {"policy": "fixed", "cache": "none", "gen_length": run["gen_length"],
            "block_length": run["block_length"], "steps": run["steps"],
            "stop_at_eos": False, "trace": True, **over}


def stdec_decode(model, run: dict, config):
    prompt = REF["prompts"][run["prompt"]]
    images = [[Image.open(HERE / "image.png")]] if IMAGE_TOKEN_INDEX in prompt else [[]]
    return decode(model, [prompt], config, images=images)


def test_the_preset_suppresses_the_official_ids():
    assert sorted(REF["suppressed"]) == list(LLADA_V_SUPPRESS)
    assert PRESETS["GSAI-ML/LLaDA-V"].decoding["suppress_ids"] == LLADA_V_SUPPRESS
    for hub_id in ("GSAI-ML/LLaDA-8B-Instruct", "GSAI-ML/LLaDA-1.5",
                   "Dream-org/Dream-v0-Instruct-7B"):  # their official generate suppresses none
        assert build(None, checkpoint_defaults(hub_id, None, {})).suppress_ids == ()


@pytest.mark.parametrize("run", RUNS, ids=lambda r: "{prompt}-{gen_length}-{block_length}-"
                         "{steps}".format(**r))
def test_fixed_rule_gives_the_official_ids_and_commit_order(model, run):
    # the preset's suppress_ids, as stdec.generate lays the user's options over them
    config = build(official_options(run), checkpoint_defaults("GSAI-ML/LLaDA-V", None, {}))
    assert config.suppress_ids == LLADA_V_SUPPRESS
    out = stdec_decode(model, run, config)
    assert out.ids[0].tolist() == run["ids"]
    assert out.trace.step[0].tolist() == run["step"]


def test_without_the_suppression_the_decode_differs(model):
    # the fixture's suppressed ids would win somewhere: the check above depends on them
    differ = [stdec_decode(model, r, build(official_options(r))).ids[0].tolist() != r["ids"]
              for r in RUNS]
    assert all(differ)


def test_a_users_suppress_ids_override_the_preset():
    defaults = checkpoint_defaults("GSAI-ML/LLaDA-V", None, {})
    assert build({"suppress_ids": "none"}, defaults).suppress_ids == ()
    assert build({"suppress_ids": "7"}, defaults).suppress_ids == (7,)


def test_the_preset_takes_the_official_demo_lengths():
    cfg = build({"policy": "fixed"}, checkpoint_defaults("GSAI-ML/LLaDA-V", None, {}))
    assert (cfg.gen_length, cfg.block_length, cfg.params.total_steps(cfg.gen_length)) == \
        (128, 128, 128)
    assert build({"policy": "threshold"}, checkpoint_defaults("GSAI-ML/LLaDA-V", None, {})).tau \
        == 0.9


# ---- prompts ----

@pytest.fixture(scope="module")
def tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(HERE / "tokenizer"))


def test_the_system_message_is_the_official_one():
    assert REF["system"] == LLADA_V_SYSTEM == PRESETS["GSAI-ML/LLaDA-V"].system_prompt


@pytest.mark.parametrize("name", list(REF["chat"]))
def test_chat_prompts_are_the_official_ids(tokenizer, name):
    case = REF["chat"][name]
    got = encode(tokenizer, [case["question"]], chat=True, images=[[None] * case["images"]],
                 system=LLADA_V_SYSTEM, drop_after_image=True)[0]
    assert got == case["ids"]
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": LLADA_V_SYSTEM},
         {"role": "user", "content": case["question"]}], tokenize=False,
        add_generation_prompt=True)
    assert text == case["text"]


def test_the_token_after_an_image_is_kept_for_stdecs_own_checkpoints(tokenizer):
    # the bundled testbed-vision was trained keeping it: only a BOS of a later piece goes
    case = REF["chat"]["one image"]
    got = encode(tokenizer, [case["question"]], chat=True, images=[[None]],
                 system=LLADA_V_SYSTEM)[0]
    at = got.index(IMAGE_TOKEN_INDEX)
    assert got[: at + 1] == case["ids"][: at + 1]
    assert got[at + 2:] == case["ids"][at + 1:] and tokenizer.decode([got[at + 1]]) == "\n"


def test_load_gives_a_known_checkpoint_its_official_prompts(tmp_path, monkeypatch):
    path = random_llava_checkpoint(tmp_path / "m")
    monkeypatch.setattr(stdec.api, "preset_for", lambda name, cfg: PRESETS["GSAI-ML/LLaDA-V"])
    m, _ = stdec.api.load(path)
    assert m.system_prompt == LLADA_V_SYSTEM and m.drop_after_image
    monkeypatch.undo()
    plain, _ = stdec.api.load(path)  # stdec's own checkpoint: no system message, no drop
    assert plain.system_prompt is None and not plain.drop_after_image


def test_the_system_message_can_be_replaced_or_left_out(tmp_path, monkeypatch):
    path = random_llava_checkpoint(tmp_path / "m")
    monkeypatch.setattr(stdec.api, "preset_for", lambda name, cfg: PRESETS["GSAI-ML/LLaDA-V"])
    m, tok = stdec.api.load(path)
    seen = []
    monkeypatch.setattr(stdec.api, "decode", lambda model, ids, *a, **k: seen.append(ids[0])
                        or (_ for _ in ()).throw(RuntimeError("stop")))
    for system in (None, "Be brief.", ""):
        with pytest.raises(RuntimeError):
            stdec.api.generate(m, tok, "hi", chat=True, system=system, gen_length=8,
                               block_length=8)
    texts = [tok.decode(ids) for ids in seen]
    assert LLADA_V_SYSTEM in texts[0]
    assert "Be brief." in texts[1] and LLADA_V_SYSTEM not in texts[1]
    assert "system" not in texts[2]


# ---- tokenizer_model_max_length ----

def test_a_prompt_past_tokenizer_model_max_length_is_refused():
    cfg = LLaDAVConfig.from_dict({**tiny_llava_config().to_dict(),
                                  "tokenizer_model_max_length": 24})
    assert cfg.tokenizer_model_max_length == 24
    assert LLaDAVConfig.from_dict(cfg.to_dict()).tokenizer_model_max_length == 24
    m = random_llava_model(cfg)
    image = Image.new("RGB", (32, 32))
    n = m.image_token_count(image.size)
    limit = n + 4
    cfg = LLaDAVConfig.from_dict({**cfg.to_dict(), "tokenizer_model_max_length": limit})
    m.config = cfg
    assert m.prompt_length([1, IMAGE_TOKEN_INDEX, 2, 3, 4], [image]) == limit
    with pytest.raises(StdecError, match=rf"takes {limit + 1} positions with its images, more "
                       rf"than this checkpoint's tokenizer_model_max_length \({limit}\)"):
        m.prompt_length([1, IMAGE_TOKEN_INDEX, 2, 3, 4, 5], [image])
    assert m.prompt_length(list(range(limit + 5)), []) == limit + 5  # text alone: not cut
