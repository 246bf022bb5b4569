"""Model configs and caches by value: what config.json keys are refused, and half-precision
caches that give the uncached logits (written to kill mutants that benchmarks/mutation.sh
found surviving in models/)."""

import pytest
import torch
from tolerance import TINY, assert_f32_close

from stdec.errors import StdecError
from stdec.models.dream import DreamConfig
from stdec.models.llada import LLaDAConfig
from stdec.testing import random_dream_model, random_model, tiny_config, tiny_dream_config

DREAM = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 300,
         "mask_token_id": 2, "pad_token_id": 1, "eos_token_id": 1, "bos_token_id": None}


@pytest.mark.parametrize("extra, message", [
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"use_sliding_window": True}, "sliding-window"),
    ({"rope_scaling": {"type": "yarn"}}, "rope_scaling"),
])
def test_dream_config_refuses_what_it_does_not_implement(extra, message):
    assert DreamConfig.from_dict({**DREAM, "hidden_act": "silu", "use_sliding_window": False,
                                  "rope_scaling": None}).hidden_size == 64
    with pytest.raises(StdecError, match=message):
        DreamConfig.from_dict({**DREAM, **extra})


def test_dream_config_reads_its_values():
    c = DreamConfig.from_dict({**DREAM, "eos_token_id": [1, 7], "rope_theta": 1e6,
                               "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
                               "max_position_embeddings": 4096, "unused": 3,
                               "sliding_window": None})
    assert (c.eos_token_id, c.rope_theta, c.rms_norm_eps, c.tie_word_embeddings) == (
        1, 1e6, 1e-6, True)
    assert (c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.max_sequence_length) == (
        2, 4, 2, 16, 4096)
    assert c.bos_token_id == DreamConfig.bos_token_id  # a null in config.json: the default


@pytest.mark.parametrize("key, value", [("block_type", "sequential"),
                                        ("layer_norm_type", "default"),
                                        ("activation_type", "gelu"), ("alibi", True),
                                        ("rope", False)])
def test_llada_config_refuses_what_it_does_not_implement(key, value):
    base = tiny_config().to_dict()
    assert LLaDAConfig.from_dict(base) == tiny_config()
    with pytest.raises(StdecError):
        LLaDAConfig.from_dict({**base, key: value})


@pytest.mark.parametrize("make", [
    lambda: random_model(tiny_config(), peak=16.0),
    lambda: random_dream_model(tiny_dream_config(), peak=16.0),
], ids=["llada", "dream"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cache_holds_the_models_dtype_and_gives_uncached_logits(make, dtype):
    model = make().to(dtype)
    ids = torch.randint(3, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    cache = model.new_cache(2, 24)
    with torch.no_grad():
        full = model(ids)
        refreshed = model(ids, cache=cache)
        shift = getattr(model, "logits_shift", 0)
        step = model(ids[:, 8 - shift : 16], cache=cache, cache_start=8 - shift,
                     logits_slice=slice(shift, shift + 8))
    assert refreshed.dtype == dtype and step.dtype == dtype
    assert torch.equal(refreshed, full)
    torch.testing.assert_close(step, full[:, 8:16], atol=0.05 if dtype != torch.float32 else
                               1e-5, rtol=0)


def read_json(path):
    import json

    return json.loads(path.read_text())


@pytest.mark.parametrize("dtype, name", [(torch.float32, "float32"), (torch.bfloat16, "bfloat16")])
def test_saved_config_says_what_the_checkpoint_is(tmp_path, dtype, name):
    from safetensors import safe_open

    from stdec.models import save_model

    folder = tmp_path / "nested" / "llada"  # parents are made
    save_model(random_model(tiny_config()).to(dtype), folder)
    cfg = read_json(folder / "config.json")
    assert (cfg["architectures"], cfg["model_type"], cfg["torch_dtype"]) == (
        ["LLaDAModelLM"], "llada", name)
    assert (cfg["block_type"], cfg["layer_norm_type"], cfg["activation_type"], cfg["rope"],
            cfg["alibi"]) == ("llama", "rms", "silu", True, False)
    assert cfg["d_model"] == 64 and cfg["mask_token_id"] == 2
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}

    dream = tmp_path / "dream"
    save_model(random_dream_model(tiny_dream_config()).to(dtype), dream)
    cfg = read_json(dream / "config.json")
    assert (cfg["architectures"], cfg["model_type"], cfg["torch_dtype"], cfg["hidden_act"],
            cfg["use_sliding_window"]) == (["DreamModel"], "Dream", name, "silu", False)
    assert "rope_scaling" in cfg and cfg["rope_scaling"] is None


def test_shards_split_by_bytes_in_order(tmp_path):
    from safetensors import safe_open

    from stdec.models import save_model

    model = random_model(tiny_config())
    state = model.state_dict()
    sizes = {k: v.numel() * 4 for k, v in state.items()}  # float32: 4 bytes a number
    limit = 40_000
    # the expected split, by hand: fill a shard in state order until the next would overflow
    shards, used = [[]], 0
    for k, n in sizes.items():
        if shards[-1] and used + n > limit:
            shards.append([])
            used = 0
        shards[-1].append(k)
        used += n
    assert len(shards) > 2
    save_model(model, tmp_path, max_shard_bytes=limit)
    index = read_json(tmp_path / "model.safetensors.index.json")
    assert index["metadata"]["total_size"] == sum(sizes.values())
    names = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    assert index["weight_map"] == {k: names[i] for i, keys in enumerate(shards) for k in keys}
    for name, keys in zip(names, shards, strict=True):
        with safe_open(tmp_path / name, "pt") as f:
            assert sorted(f.keys()) == sorted(keys) and f.metadata() == {"format": "pt"}


@pytest.mark.parametrize("raw, cls", [
    ({"model_type": "llada"}, "LLaDAModelLM"),
    ({"architectures": ["LLaDAModelLM"]}, "LLaDAModelLM"),
    ({"model_type": "Dream"}, "DreamModel"),
    ({"model_type": "dream"}, "DreamModel"),
    ({"architectures": ["DreamModel"]}, "DreamModel"),
    ({"model_type": "llava_llada"}, "LLaDAVModel"),
    ({"architectures": ["LlavaLLaDAModelLM"]}, "LLaDAVModel"),
])
def test_model_class_from_model_type_or_architectures(raw, cls):
    from stdec.models import model_class

    assert model_class(raw).__name__ == cls


@pytest.mark.parametrize("raw", [{"model_type": "qwen2"}, {"architectures": ["LlamaForCausalLM"]},
                                 {}])
def test_model_class_refuses_other_models(raw):
    from stdec.models import model_class

    with pytest.raises(StdecError, match="stdec loads"):
        model_class(raw)


def test_llada_config_without_the_optional_keys_is_llama_rms_silu():
    raw = {k: v for k, v in tiny_config().to_dict().items()
           if k not in ("block_type", "layer_norm_type", "activation_type", "rope", "alibi")}
    assert LLaDAConfig.from_dict(raw) == tiny_config()


def test_weights_under_any_safetensors_name_load(tmp_path):
    """Without model.safetensors or an index, every *.safetensors file is read."""
    from safetensors.torch import load_file, save_file

    from stdec.models import load_model, save_model

    model = random_model(tiny_config())
    save_model(model, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    keys = sorted(state)
    (tmp_path / "model.safetensors").unlink()
    save_file({k: state[k] for k in keys[:5]}, tmp_path / "part-a.safetensors")
    save_file({k: state[k] for k in keys[5:]}, tmp_path / "part-b.safetensors")
    loaded = load_model(tmp_path, device="cpu")
    assert all(torch.equal(loaded.state_dict()[k], state[k]) for k in keys)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.pth", "w.ckpt"])
def test_pickled_weights_get_the_convert_hint(tmp_path, name):
    from stdec.models import load_model

    (tmp_path / "config.json").write_text(tiny_config().to_dict().__repr__().replace("'", '"')
                                          .replace("True", "true").replace("False", "false")
                                          .replace("None", "null"))
    (tmp_path / name).write_bytes(b"pickle")
    with pytest.raises(StdecError, match=f"found {name}: convert it to safetensors first"):
        load_model(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(StdecError) as err:
        load_model(tmp_path)
    assert "no .safetensors weights." in str(err.value) and "convert" not in str(err.value)


@pytest.mark.parametrize("flags, biased", [
    ({}, set()),
    ({"include_qkv_bias": True}, {"q_proj", "k_proj", "v_proj"}),
    ({"include_bias": True}, {"q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj",
                              "ff_out"}),
])
def test_llada_bias_switches(flags, biased):
    from stdec.models.llada import LLaDAModelLM

    keys = LLaDAModelLM(tiny_config(n_layers=1, **flags)).state_dict().keys()
    got = {k.split(".")[-2] for k in keys if k.endswith(".bias")}
    assert got == biased  # the output head (transformer.ff_out) never has a bias
    assert "model.transformer.ff_out.bias" not in keys


@pytest.mark.parametrize("make", [
    lambda: random_model(tiny_config(), peak=16.0),
    lambda: random_dream_model(tiny_dream_config(), peak=16.0),
], ids=["llada", "dream"])
def test_logits_index_picks_each_rows_positions(make):
    model = make()
    ids = torch.randint(3, 300, (2, 20), generator=torch.Generator().manual_seed(5))
    index = torch.tensor([[3, 4, 5, 6], [10, 11, 12, 13]])  # rows at different blocks
    with torch.no_grad():
        full = model(ids)
        got = model(ids, logits_index=index)
    want = torch.stack([full[0, 3:7], full[1, 10:14]])
    assert_f32_close(got, want, **TINY)
