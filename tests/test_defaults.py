"""Decoding defaults belong to the checkpoint: code < preset < the folder's file < the user."""

import json
import re
import shutil

import pytest

import stdec
from stdec.api import ASSETS, generate, load
from stdec.cli import main
from stdec.decoding import registry
from stdec.decoding.config import DecodeConfig
from stdec.decoding.defaults import FILE, checkpoint_defaults, effective, read_defaults_file
from stdec.errors import StdecError
from stdec.models.presets import PRESETS

LLADA_8B = {"architectures": ["LLaDAModelLM"], "model_type": "llada", "mask_token_id": 126336,
            "eos_token_id": 126081, "pad_token_id": 126081, "d_model": 4096}
TESTBED_TUNED = {"tau_high": 0.99, "tau_low": 0.95, "sigma": 2.0, "rho": 0.97, "window": 2,
                 "eb_gamma": 0.03, "klass_tau": 0.95, "klass_kl": 0.1, "klass_steps": 1,
                 "wino_draft": 0.9, "wino_verify": 0.95, "credit_tau": 0.98}  # dev-tuned


def folder(tmp_path, config: dict, defaults: dict | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    if defaults is not None:
        (tmp_path / FILE).write_text(json.dumps(defaults))
    return tmp_path


def test_llada_8b_recognised_by_config_gets_the_published_threshold(tmp_path):
    got = stdec.decoding_defaults(str(folder(tmp_path / "my-copy", LLADA_8B)))
    assert got["tau_high"] <= 0.9 and got["gen_length"] == 256 and got["block_length"] == 32
    assert got["tau_high"] <= got["tau"]  # STDec never stricter than Fast-dLLM's threshold
    assert got["tau_low"] <= got["tau_high"] and got["rho"] < 1


@pytest.mark.parametrize("hub_id", list(PRESETS))
def test_known_hub_ids_get_their_preset_offline(hub_id, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing to read
    got = stdec.decoding_defaults(hub_id)
    assert got["tau_high"] <= 0.9 and got["gen_length"] == PRESETS[hub_id].gen_length
    assert got == {**code_defaults(), **PRESETS[hub_id].decoding}


def code_defaults() -> dict:
    """Every option's code default: the shared ones and each rule's own."""
    out = {name: default for name, (_, default, _) in DecodeConfig.shared_fields().items()}
    for rule in registry.RULES.values():
        out.update({name: f[1] for name, f in registry.param_fields(rule.params).items()})
    return out


def test_the_testbed_keeps_its_tuned_setting():
    got = stdec.decoding_defaults("testbed")
    assert {k: got[k] for k in TESTBED_TUNED} == TESTBED_TUNED
    assert got["gen_length"] == 128
    assert json.loads((ASSETS / "testbed" / FILE).read_text()) == TESTBED_TUNED


def test_code_defaults_are_model_neutral():
    cfg = DecodeConfig()
    assert (cfg.tau_high, cfg.tau_low, cfg.rho) == (0.9, 0.75, 0.9)
    assert cfg.tau_high <= DecodeConfig(policy="threshold").tau


def test_precedence_code_preset_file_user(tmp_path):
    # the preset sets gen_length 256 and tau_high 0.9; the file overrides tau_high only
    path = folder(tmp_path / "ckpt", LLADA_8B, {"tau_high": 0.85, "eb_gamma": 0.2})
    layered = checkpoint_defaults("local", path, LLADA_8B)
    assert (layered["gen_length"], layered["tau_high"], layered["eb_gamma"]) == (256, 0.85, 0.2)
    cfg = effective(layered, {"tau_high": 0.8, "gen_length": 64})
    assert (cfg.tau_high, cfg.gen_length) == (0.8, 64)
    assert effective(layered, {"policy": "eb"}).eb_gamma == 0.2  # each rule takes its own
    assert effective(layered, {"policy": "klass"}).klass_tau == 0.9
    # a folder of an unknown model: only its file over the code
    plain = checkpoint_defaults("x", folder(tmp_path / "other", {"architectures": ["X"]},
                                            {"rho": 0.5}), {"architectures": ["X"]})
    assert plain == {"rho": 0.5}


@pytest.mark.parametrize("content, message", [
    ({"tau_hgh": 0.9}, "unknown decoding option 'tau_hgh'"),
    ({"tau_high": 1.5}, r"tau_high must be in \(0, 1\]"),
    ([0.9], "one JSON object"),
    # no policy named: the shared options are checked under every rule all the same
    ({"temperature": -1}, r"temperature must be >= 0"),
])
def test_a_bad_defaults_file_fails_in_one_sentence(tmp_path, content, message):
    path = folder(tmp_path / "ckpt", LLADA_8B)
    (path / FILE).write_text(json.dumps(content))
    with pytest.raises(StdecError, match=message):
        stdec.decoding_defaults(str(path))


def test_generate_lays_the_users_options_over_the_checkpoints(checkpoint, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(checkpoint, path)
    (path / FILE).write_text(json.dumps({"gen_length": 16, "block_length": 8,
                                         "policy": "threshold"}))
    model, tok = load(path)
    assert model.decoding_defaults["gen_length"] == 16
    assert generate(model, tok, "hello").ids.shape[1] == 16
    assert generate(model, tok, "hello", gen_length=24).ids.shape[1] == 24
    # a whole DecodeConfig passed is the user's: the checkpoint's file does not reach it
    assert generate(model, tok, "hello", DecodeConfig(gen_length=8, block_length=8)) \
        .ids.shape[1] == 8


def test_generate_json_prints_text_stats_and_effective_settings(checkpoint, tmp_path, capsys):
    path = tmp_path / "ckpt"
    shutil.copytree(checkpoint, path)
    (path / FILE).write_text(json.dumps({"gen_length": 16, "block_length": 8, "rho": 0.5}))
    assert main(["generate", "hello", "--model", str(path), "--no-chat", "--json",
                 "--block-length", "16"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record) >= {"text", "stats", "settings"}
    assert record["settings"]["gen_length"] == 16 and record["settings"]["rho"] == 0.5
    assert record["settings"]["block_length"] == 16  # the user's flag over the file
    assert record["stats"]["nfe"] >= 1


def test_a_known_hub_id_gets_its_preset_by_name_whatever_its_config_says():
    name = "GSAI-ML/LLaDA-8B-Instruct"
    assert checkpoint_defaults(name, None, {}) == PRESETS[name].decoding
    assert checkpoint_defaults("someone/else", None, {}) == {}


def test_a_conflict_with_a_checkpoint_default_names_its_source(capsys):
    source = r"\(tau_low 0\.95 comes from the model's decoding_defaults\.json; set tau_low"
    model, tok = load("testbed")
    with pytest.raises(StdecError, match=r"tau_low \(0\.95\) must not exceed tau_high \(0\.9\)"
                       r".*" + source):
        stdec.generate(model, tok, "hi", tau_high=0.9)
    assert main(["generate", "hi", "--tau-high", "0.9"]) == 2
    assert re.search(source, capsys.readouterr().err)
    # another rule's options of the checkpoint never reach a config: threshold takes tau only
    assert stdec.generate(model, tok, "hi", policy="threshold", gen_length=32).stats[0].nfe >= 1


def test_the_file_alone_is_checked_under_every_rule_when_it_names_no_policy(tmp_path):
    # read_defaults_file names the file's own bad value before any layering
    path = tmp_path / FILE
    path.write_text(json.dumps({"temperature": -1}))
    with pytest.raises(StdecError, match="temperature must be >= 0"):
        read_defaults_file(path)
    path.write_text(json.dumps({"temperature": 0.5, "tau": 0.8}))
    assert read_defaults_file(path) == {"temperature": 0.5, "tau": 0.8}
