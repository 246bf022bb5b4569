"""The public API, the command line, and every bad input's one clear sentence."""

import json
import shutil

import pytest
import torch

import stdec
from stdec import DecodeConfig, StdecError
from stdec.cli import main


def test_generate_returns_texts_ids_stats_and_trace(checkpoint):
    model, tok = stdec.load(checkpoint)
    out = stdec.generate(model, tok, ["Tom has 3 apples", "def add"], policy="stdec",
                         cache="dual", gen_length=16, block_length=8, trace=True)
    assert len(out.texts) == 2 and out.ids.shape == (2, 16)
    for s in out.stats:
        assert 1 <= s.nfe <= 16 and s.tpf == pytest.approx(s.gen_tokens / s.nfe)
        assert s.wall_time > 0
    assert out.trace.step.shape == (2, 16)


def test_generate_in_a_few_slots_gives_what_each_prompt_gives_alone(checkpoint):
    model, tok = stdec.load(checkpoint)
    prompts = ["Tom has 3 apples", "def add", "Sort the list [3, 1, 2].", "x", "What is 2 + 3?"]
    options = dict(policy="stdec", cache="dual", gen_length=16, block_length=8)
    alone = [stdec.generate(model, tok, p, **options).texts[0] for p in prompts]
    done = []
    out = stdec.generate(model, tok, prompts, batch_size=2,
                         on_finish=lambda i, text: done.append((i, text)), **options)
    assert out.texts == alone
    assert sorted(done) == list(enumerate(alone))
    with pytest.raises(StdecError, match="batch_size must be a positive integer or None, got 0"):
        stdec.generate(model, tok, prompts, batch_size=0)


def test_cli_generate_prints_text_and_stats(checkpoint, capsys):
    code = main(["generate", "Tom has", "--model", str(checkpoint), "--policy", "threshold",
                 "--cache", "prefix", "--gen-length", "16", "--block-length", "8", "--tau", "0.5"])
    assert code == 0
    err = capsys.readouterr().err
    assert "[threshold, cache prefix]" in err and "tokens/forward" in err


@pytest.mark.parametrize("flag, expected", [([], True), (["--no-chat"], False), (["--chat"], True)])
def test_cli_uses_the_chat_template_when_the_tokenizer_has_one(checkpoint, monkeypatch, flag,
                                                              expected):
    seen = {}
    real = stdec.generate

    def spy(*args, chat, **kw):
        seen["chat"] = chat
        return real(*args, chat=chat, **kw)

    monkeypatch.setattr(stdec, "generate", spy)
    assert stdec.load(checkpoint)[1].chat_template  # the test checkpoint is an instruct model
    assert main(["generate", "Tom has", "--model", str(checkpoint), "--gen-length", "8",
                 "--block-length", "8", *flag]) == 0
    assert seen["chat"] is expected


@pytest.mark.parametrize("options, message", [
    (dict(policy="greedy"), "unknown policy 'greedy'"),
    (dict(cache="full"), "unknown cache 'full'"),
    (dict(policy="threshold", tau=0.0), "tau must be in (0, 1], got 0.0"),
    (dict(tau=0.5), "tau does not apply to policy stdec; stdec's options are tau_high, "
     "tau_low, sigma, rho, window"),
    (dict(tau_high=1.3), "tau_high must be in (0, 1], got 1.3"),
    (dict(tau_low=0.95, tau_high=0.9), "tau_low (0.95) must not exceed tau_high (0.9)"),
    (dict(rho=1.5), "rho must be in (0, 1]"),
    (dict(policy="fixed", gen_length=30, steps=7),
     "steps (7) must give a block of 32 a whole number of steps"),
    (dict(gen_length=0), "gen_length must be a positive integer"),
    (dict(policy="fixed", steps=5), "steps (5) must be a multiple of the number of blocks (4)"),
    (dict(policy="fixed", steps=1024), "steps (1024) must be a multiple"),
    (dict(sigma=0), "sigma must be > 0"),
    (dict(window=0), "window must be a positive integer"),
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(policy="localleap", leap_radius=-1), "leap_radius must be an integer >= 0"),
])
def test_bad_decode_options_fail_with_one_sentence(options, message):
    with pytest.raises(StdecError) as err:
        DecodeConfig(**options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_generate_inputs(checkpoint):
    model, tok = stdec.load(checkpoint)
    with pytest.raises(StdecError, match="prompt 1 is empty"):
        stdec.generate(model, tok, ["ok", ""])
    with pytest.raises(StdecError, match="exceeds the model's max length 512"):
        stdec.generate(model, tok, "hi", gen_length=512, block_length=32)
    with pytest.raises(StdecError, match="unknown decoding option 'temp'"):
        stdec.generate(model, tok, "hi", temp=1.0)


def test_bad_checkpoints(tmp_path, checkpoint):
    with pytest.raises(StdecError, match="is not a folder"):
        stdec.load(tmp_path / "missing")
    with pytest.raises(StdecError, match="has no config.json"):
        stdec.load_model(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(StdecError, match="corrupt or truncated"):
        stdec.load_model(bad)
    weights.rename(bad / "pytorch_model.bin")
    with pytest.raises(StdecError, match="no .safetensors weights.*never unpickles"):
        stdec.load_model(bad)
    (bad / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(StdecError, match="holds a 'qwen2' model"):
        stdec.load_model(bad)


def test_tokenizer_without_mask_token(tmp_path, checkpoint):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path / "nomask"
    shutil.copytree(checkpoint, folder)
    for f in folder.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(StdecError, match="has no tokenizer"):
        stdec.load(folder)
    words = Tokenizer(models.WordLevel({"[UNK]": 0, "<eos>": 1, "hi": 3}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]",
                            eos_token="<eos>").save_pretrained(str(folder))
    model, tok = stdec.load(folder)
    with pytest.raises(StdecError, match="no mask token"):
        stdec.generate(model, tok, "hi")


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    assert main(["generate", "hi", "--model", str(tmp_path), "--tau-high", "2"]) == 2
    assert capsys.readouterr().err.strip() == "stdec: error: tau_high must be in (0, 1], got 2.0."
    assert main(["generate", "hi", "--model", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_load_on_cpu_in_bfloat16(checkpoint):
    model = stdec.load_model(checkpoint, dtype="bfloat16", device="cpu")
    full = stdec.load_model(checkpoint, dtype="float32", device="cpu")
    assert model.dtype == torch.bfloat16
    # every tensor is the checkpoint's float32 value rounded to bfloat16 (test_precision.py
    # holds the forward and decode tolerances)
    half = model.state_dict()
    assert all(torch.equal(half[k], v.to(torch.bfloat16)) for k, v in full.state_dict().items())
    with pytest.raises(StdecError, match="unknown dtype 'fp8'"):
        stdec.load_model(checkpoint, dtype="fp8")


def test_qwen2_style_tokenizer_files_load(tmp_path, checkpoint):
    """Dream ships vocab.json + merges.txt and a remote-code class; stdec reads the files."""
    folder = tmp_path / "bpe"
    shutil.copytree(checkpoint, folder)
    _, fast = stdec.load(checkpoint)
    fast.backend_tokenizer.model.save(str(folder))
    (folder / "tokenizer.json").unlink()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "DreamTokenizer"  # a class stdec must not try to import
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    model, tok = stdec.load(folder)
    # Qwen2's pre-tokenizer splits text its own way; the vocabulary and merges are ours
    assert tok.decode(tok("Tom has 3 apples.")["input_ids"]) == "Tom has 3 apples."
    assert tok.mask_token_id == fast.mask_token_id
    out = stdec.generate(model, tok, "Tom has", gen_length=8, block_length=8, chat=True)
    assert isinstance(out.texts[0], str)


def test_presets_set_lengths_for_known_models(tmp_path):
    from stdec.cli import build_parser, decode_config
    from stdec.models.llada import LLaDAConfig
    from stdec.models.presets import preset_for

    (tmp_path / "config.json").write_text(json.dumps(LLaDAConfig().to_dict()))  # LLaDA-8B
    args = build_parser().parse_args(["generate", "hi", "--model", str(tmp_path)])
    assert (decode_config(args).gen_length, decode_config(args).block_length) == (256, 32)
    args = build_parser().parse_args(["generate", "hi", "--model", str(tmp_path),
                                      "--gen-length", "64"])
    assert decode_config(args).gen_length == 64  # what the user asks for wins
    assert preset_for("Dream-org/Dream-v0-Instruct-7B", {}).mask_token_id == 151666
    assert preset_for("mine", {"architectures": ["LLaDAModelLM"], "mask_token_id": 2}) is None
