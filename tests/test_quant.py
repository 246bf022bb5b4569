"""Weight-only quantization at load (models/quant.py, torchao): what it rewrites and what it
keeps; quantized embeddings looked up row by row as torchao's own quantized tables; greedy
decodes of a quantized tiny model as invariant as the float model's (rows as alone, the plain
reference loop in every cache mode, fused as plain, fixed-shape steps, compiled, the LM inside
LaViDa), with and without quantized embeddings; --quantize at every entrance; the
one-sentence refusals, before any weight is read."""

import importlib.util
import sys
from dataclasses import replace
from importlib.metadata import PackageNotFoundError

import pytest
import torch
from PIL import Image
from reference import config, reference_decode
from test_decoding import ref_forward
from test_static_step import PROMPTS, decode_all

import stdec
from stdec import api, cli
from stdec.decoding.config import CACHE_MODES
from stdec.decoding.engine import decode
from stdec.errors import StdecError
from stdec.models import quant, skeleton
from stdec.models.layers import FusedLinear
from stdec.models.llada_v import IMAGE_TOKEN_INDEX as IMG
from stdec.testing import (
    random_dream_model,
    random_llava_model,
    random_model,
    tiny_config,
    tiny_dream_config,
    tiny_lavida_config,
    tiny_lavida_dream_config,
)

needs_torchao = pytest.mark.skipif(importlib.util.find_spec("torchao") is None,
                                   reason="torchao is not installed (pip install 'stdec[quant]')")
MODES = ("int8", "int4")
BUILD = {
    "llada": lambda: random_model(tiny_config(n_kv_heads=2), peak=16.0),
    "dream": lambda: random_dream_model(tiny_dream_config(), peak=16.0),
    "lavida": lambda: random_llava_model(tiny_lavida_config(), peak=16.0),
    "lavida-dream": lambda: random_llava_model(tiny_lavida_dream_config(), peak=16.0),
}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    # the tiny models' matmuls gain nothing from threads and lose much on a shared CPU (the
    # root conftest puts the count back)
    torch.set_num_threads(1)


def quantized(arch: str, mode: str, *, fuse: bool = True, head: bool = False,
              embeddings: bool = False):
    model = BUILD[arch]()
    if fuse:
        model.fuse()
    quant.check(model, mode, CPU, model.dtype, head, embeddings)
    return quant.quantize(model, mode, head, embeddings)


def is_quantized(t: torch.Tensor) -> bool:
    from torchao.utils import TorchAOBaseTensor

    return isinstance(t, TorchAOBaseTensor)


# ---- what is quantized, what keeps the model dtype ----

@needs_torchao
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", BUILD)
@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "plain"])
def test_only_the_language_models_block_layers_are_quantized(arch, mode, fuse):
    model = quantized(arch, mode, fuse=fuse)
    blocks = model.blocks()
    layers = {id(m) for m in blocks.modules() if isinstance(m, torch.nn.Linear | FusedLinear)}
    assert layers and any(isinstance(m, FusedLinear) for m in blocks.modules()) == fuse
    for name, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if id(m) in layers and pname == "weight":
                assert is_quantized(p), name
            else:  # embeddings, norms, biases, the head, the vision tower and projector
                assert not is_quantized(p) and p.dtype == torch.float32, f"{name}.{pname}"


@needs_torchao
@pytest.mark.parametrize("mode", MODES)
def test_the_head_is_quantized_when_asked(mode):
    model = random_model(tiny_config(vocab_size=320), peak=16.0).fuse()  # int4: rows by 16
    quant.check(model, mode, CPU, model.dtype, head=True)
    quant.quantize(model, mode, head=True)
    assert is_quantized(model.output_head().weight)
    assert not is_quantized(model.get_input_embeddings().weight)
    x = torch.randint(3, 250, (2, 12))
    with torch.no_grad():
        assert model(x).shape == (2, 12, 320)


# ---- quantized embeddings: torchao's quantized table, read one row at a time ----

def torchao_table(table: torch.Tensor, mode: str) -> torch.Tensor:
    """`table` quantized by torchao's own config for an nn.Embedding, dequantized whole."""
    import torchao.quantization as ao
    from torchao.quantization.granularity import PerGroup

    emb = torch.nn.Embedding(*table.shape, _weight=table.clone())
    config = (ao.Int8WeightOnlyConfig(set_inductor_config=False) if mode == "int8" else
              ao.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(
                  quant.group_size(table.shape[1])), mapping_type=ao.MappingType.ASYMMETRIC))
    ao.quantize_(emb, config, filter_fn=lambda m, _: m is emb)
    return emb.weight.dequantize()


@needs_torchao
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", [64, 96])  # int4: groups of 64; of 32
def test_an_embedding_lookup_is_the_rows_of_torchaos_quantized_table(mode, width):
    # int8 as Int8WeightOnlyConfig, int4 as IntxWeightOnlyConfig (asymmetric, per group):
    # the same values, rows gathered before dequantizing instead of after
    table = torch.randn(40, width, generator=torch.Generator().manual_seed(1))
    emb = quant.QuantizedEmbedding(table, mode)
    full = torchao_table(table, mode)
    ids = torch.tensor([[3, 7, 39, 7], [0, 0, 12, 25]])
    assert torch.equal(emb(ids), full[ids]) and emb(ids).dtype == torch.float32
    assert not torch.equal(full, table)  # it was quantized
    assert emb.qdata.shape == (40, width if mode == "int8" else width // 2)  # int4: packed
    with pytest.raises(IndexError):  # as nn.Embedding: a negative id is an error
        emb(torch.tensor([[-1]]))


@needs_torchao
@pytest.mark.parametrize("mode", MODES)
def test_an_embedding_lookup_makes_nothing_the_size_of_the_table(mode):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        most = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor):
                    self.most = max(self.most, t.numel())
            return out

    emb = quant.QuantizedEmbedding(torch.randn(4096, 64), mode)
    ids = torch.tensor([[5, 4000, 17]])
    with Largest() as seen:
        emb(ids)
    assert 0 < seen.most <= ids.numel() * 64  # the three rows, never the 4096


@needs_torchao
@pytest.mark.parametrize("mode", MODES)
def test_an_embedding_lookup_keeps_the_tables_dtype(mode):
    table = torch.randn(40, 64, generator=torch.Generator().manual_seed(2)).bfloat16()
    emb = quant.QuantizedEmbedding(table, mode)
    ids = torch.tensor([[1, 2, 3]])
    rows = emb(ids)
    assert rows.dtype == torch.bfloat16
    assert (rows.float() - table[ids].float()).abs().max() < (0.02 if mode == "int8" else 0.3)


@needs_torchao
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", BUILD)
def test_the_embeddings_are_quantized_when_asked(arch, mode):
    model = BUILD[arch]().fuse()
    table = model.get_input_embeddings().weight.detach().clone()
    quant.check(model, mode, CPU, model.dtype, embeddings=True)
    quant.quantize(model, mode, embeddings=True)
    emb = model.get_input_embeddings()
    assert isinstance(emb, quant.QuantizedEmbedding) and model.dtype == torch.float32
    assert torch.equal(emb(torch.arange(len(table))), torchao_table(table, mode))
    assert not is_quantized(model.output_head().weight)  # the head only with quantize_head
    x = torch.randint(3, 60, (2, 12))
    with torch.no_grad():
        assert model(x).shape[:2] == (2, 12)
    float_bytes = quant.weight_bytes(BUILD[arch]().fuse())
    assert quant.weight_bytes(model) < quant.weight_bytes(quantized(arch, mode)) < float_bytes


# ---- greedy decodes: as invariant as the float model's ----

EMBEDDINGS = pytest.mark.parametrize("embeddings", [False, True], ids=["", "embeddings"])


@needs_torchao
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cache", CACHE_MODES)
@EMBEDDINGS
def test_quantized_rows_decode_as_they_do_alone(mode, cache, embeddings):
    # as tests/test_decoding.py's test_rows_decode_as_they_do_alone, on a quantized model;
    # what quantization touches is the forward, which every rule shares: one rule a cache
    model = quantized("llada", mode, embeddings=embeddings)
    prompts = [[5, 9, 33], [7, 101, 54, 8, 12, 40, 41], [77]]
    policy = {"none": "fixed", "prefix": "threshold"}.get(cache, "stdec")
    cfg = config(policy, cache, **({"steps": 12} if policy == "fixed" else {}))
    together = decode(model, prompts, cfg)
    for row, prompt in enumerate(prompts):
        alone = decode(model, [prompt], cfg)
        assert together.ids[row].tolist() == alone.ids[0].tolist(), row
        assert together.stats[row].nfe == alone.stats[0].nfe


@needs_torchao
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cache", CACHE_MODES)
@EMBEDDINGS
def test_every_cache_mode_decodes_a_quantized_model_as_the_reference_loop(mode, cache,
                                                                            embeddings):
    # as test_decode_matches_reference_loop: the plain loop calls each (quantized) layer
    model = quantized("llada", mode, fuse=False, embeddings=embeddings)
    cfg = config("threshold", cache, stop_at_eos=False)
    prompt = [5, 9, 33, 7, 101, 54, 8]
    ids, nfe = reference_decode(model, prompt, cfg, ref_forward)
    out = decode(model, [prompt], cfg)
    assert out.ids[0].tolist() == ids and out.stats[0].nfe == nfe
    assert nfe < cfg.gen_length  # the rule committed several tokens in some steps


@needs_torchao
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_a_quantized_fused_model_decodes_as_the_quantized_plain_one(arch, mode):
    # per-row scales (int8) and per-row groups (int4): fusing stacks rows, so the quantized
    # values are the same and so are the greedy decodes (as tests/test_fused.py's)
    fused, plain = quantized(arch, mode), quantized(arch, mode, fuse=False)
    prompts = [[5, 9, 33], [7, 101, 54, 8, 12]]
    for cache in ("none", "dual"):
        cfg = config("threshold", cache)
        assert torch.equal(decode(fused, prompts, cfg).ids, decode(plain, prompts, cfg).ids)


@needs_torchao
@pytest.mark.parametrize("mode", MODES)
@EMBEDDINGS
def test_quantized_static_steps_decode_what_the_plain_ones_do(mode, embeddings):
    # the fixed-shape step that CUDA replays as a graph, run eagerly (test_static_step.py)
    model = quantized("llada", mode, embeddings=embeddings)
    cfg = config("stdec", "dual")
    plain, _ = decode_all(model, PROMPTS, cfg, static=False, max_batch=3)
    static, engine = decode_all(model, PROMPTS, cfg, static=True, max_batch=3)
    assert static == plain and engine.runner.static.inputs


@needs_torchao
def test_a_compiled_quantized_model_decodes_what_the_eager_one_does():
    # the embeddings quantized too: their row lookup compiles with the blocks
    eager = quantized("llada", "int8", embeddings=True)
    compiled = quantized("llada", "int8", embeddings=True)
    api.compile_model(compiled)
    # one kind of step, one block: one compile (tens of seconds: the one slow test here)
    cfg = replace(config("threshold", "none"), gen_length=8)
    a, _ = decode_all(eager, PROMPTS[:2], cfg, static=False, max_batch=2)
    b, _ = decode_all(compiled, PROMPTS[:2], cfg, static=False, max_batch=2)
    assert a == b


@needs_torchao
@pytest.mark.parametrize("arch, mode, embeddings", [
    ("lavida", "int8", False), ("lavida-dream", "int4", False),
    ("lavida", "int4", True), ("lavida-dream", "int8", True)])
def test_image_and_text_rows_of_a_quantized_vision_model_decode_as_alone(arch, mode,
                                                                         embeddings):
    # with quantized embeddings, image positions still take the tower's vectors
    lv = quantized(arch, mode, embeddings=embeddings)
    g = torch.Generator().manual_seed(3)
    image = Image.fromarray(torch.randint(0, 256, (32, 64, 3), generator=g,
                                          dtype=torch.uint8).numpy())
    prompts, images = [[5, 9, IMG, 33], [7, 101, 54, 8, 12]], [[image], []]
    cfg = config("stdec", "dual")
    together = decode(lv, prompts, cfg, images=images)
    for i, (p, im) in enumerate(zip(prompts, images, strict=True)):
        assert together.ids[i].tolist() == decode(lv, [p], cfg, images=[im]).ids[0].tolist()


# ---- every entrance ----

@needs_torchao
@EMBEDDINGS
def test_load_quantizes_and_generates(checkpoint, embeddings):
    model, tok = stdec.load(checkpoint, device="cpu", quantize="int8",
                            quantize_embeddings=embeddings)
    assert is_quantized(model.blocks()[0].gate_up_proj.weight)
    assert isinstance(model.get_input_embeddings(), quant.QuantizedEmbedding) == embeddings
    out = stdec.generate(model, tok, ["Sort [2, 1].", "2 + 3 ="], gen_length=16, block_length=8,
                         cache="dual")
    assert out.ids.shape == (2, 16)


@pytest.fixture
def loads(monkeypatch):
    """stdec.load as every entrance calls it, replaced by a spy that stops the run."""
    seen = {}

    class Stop(Exception):
        pass

    def spy(model, **kw):
        seen.update(kw)
        raise Stop

    for owner in (stdec, api):
        monkeypatch.setattr(owner, "load", spy)
    return seen, Stop


ENTRANCES = {
    "generate": ["generate", "hi"],
    "viz": ["viz", "hi", "--out", "{tmp}/order.png"],
    "bench": ["bench", "--tasks", "lists", "--limit", "1", "--out", "{tmp}/bench"],
    "tune": ["tune", "stdec", "--tasks", "lists", "--limit", "1"],
    "serve": ["serve", "--port", "8765"],
}


@pytest.mark.parametrize("entrance", ENTRANCES)
def test_every_command_takes_quantize_to_load(entrance, checkpoint, loads, tmp_path):
    seen, stop = loads
    argv = [a.replace("{tmp}", str(tmp_path)) for a in ENTRANCES[entrance]]
    with pytest.raises(stop):
        cli.main([*argv, "--model", str(checkpoint), "--device", "cpu", "--quantize", "int4",
                  "--quantize-head", "--quantize-embeddings"])
    assert seen["quantize"] == "int4" and seen["quantize_head"] is True
    assert seen["quantize_embeddings"] is True


def test_lm_eval_model_args_take_quantize(checkpoint, monkeypatch):
    pytest.importorskip("lm_eval")
    import stdec.lm_eval as adapter

    seen = {}
    monkeypatch.setattr(adapter, "load", lambda model, **kw: (seen.update(kw), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        adapter.StdecLM.create_from_arg_string(
            f"pretrained={checkpoint},quantize=int8,quantize_head=true,"
            "quantize_embeddings=true", {"device": "cpu"})
    assert seen["quantize"] == "int8" and seen["quantize_head"] is True
    assert seen["quantize_embeddings"] is True
    with pytest.raises(StdecError, match="quantize must be one of int8, int4"):
        adapter.StdecLM(pretrained="/no/such/folder", quantize="int3")


@needs_torchao
def test_the_cli_and_the_server_run_a_quantized_model(checkpoint, capsys):
    assert cli.main(["generate", "Sort [2, 1].", "--model", str(checkpoint), "--quantize",
                     "int8", "--gen-length", "8", "--block-length", "8"]) == 0
    assert "tokens/forward" in capsys.readouterr().err
    import openai
    from test_serve import start

    model, tok = stdec.load(checkpoint, device="cpu", quantize="int4")
    server, thread, url = start((model, tok), max_batch=2)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        text = client.completions.create(model="testbed", prompt="Sort [2, 1].", max_tokens=20)
        want = stdec.generate(model, tok, "Sort [2, 1].", policy="threshold", cache="dual",
                              gen_length=20, block_length=16).texts[0]  # max_tokens
        assert text.choices[0].text == want
    finally:
        server.should_exit = True
        thread.join(10)


# ---- refusals: one sentence, naming what would work, before any weight is read ----

@pytest.fixture
def no_weights(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("weights were read before the refusal")

    monkeypatch.setattr(api, "load_model", refuse)


def one_sentence(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text.endswith(".") and text.count(". ") == 0, text
    return text


def test_without_torchao_quantize_is_refused(checkpoint, monkeypatch, no_weights):
    monkeypatch.setitem(sys.modules, "torchao", None)  # `import torchao` now fails
    for mode in MODES:
        with pytest.raises(StdecError) as err:
            stdec.load(checkpoint, device="cpu", quantize=mode)
        assert "needs torchao, which is not installed; install it with pip install " \
            "'stdec[quant]'" in one_sentence(err)


def test_without_torchao_the_cli_says_so_in_one_line(checkpoint, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchao", None)
    assert cli.main(["generate", "hi", "--model", str(checkpoint), "--quantize", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'stdec[quant]'" in err[0]


def test_an_old_torchao_is_refused(checkpoint, monkeypatch, no_weights):
    monkeypatch.setattr(quant, "version", lambda name: "0.12.0")
    with pytest.raises(StdecError, match=r"needs torchao >= 0\.18, found 0\.12\.0"):
        stdec.load(checkpoint, device="cpu", quantize="int8")


def test_an_unknown_torchao_version_reads_as_missing(checkpoint, monkeypatch, no_weights):
    def missing(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(quant, "version", missing)
    with pytest.raises(StdecError, match="not installed"):
        stdec.load(checkpoint, device="cpu", quantize="int8")


@needs_torchao
def test_int4_without_its_cpu_kernel_is_refused(checkpoint, monkeypatch, no_weights):
    monkeypatch.setattr(quant, "_has_cpu_int4", lambda: False)
    with pytest.raises(StdecError) as err:
        stdec.load(checkpoint, device="cpu", quantize="int4")
    assert "use a CUDA GPU, or quantize int8" in one_sentence(err)


@needs_torchao
def test_int4_on_cuda_needs_bfloat16():
    model = skeleton(tiny_config().to_dict())
    with pytest.raises(StdecError) as err:
        quant.check(model, "int4", torch.device("cuda"), torch.float32)
    assert "pass dtype bfloat16" in one_sentence(err)


@needs_torchao
def test_layers_int4_cannot_pack_on_the_cpu_are_named(checkpoint, no_weights):
    # the tiny tokenizer's vocabulary (not a multiple of 16) is the head's output width
    with pytest.raises(StdecError) as err:
        stdec.load(checkpoint, device="cpu", quantize="int4", quantize_head=True)
    assert "model.transformer.ff_out is 64 -> " in one_sentence(err)


@needs_torchao
def test_a_tied_head_cannot_be_quantized():
    model = skeleton(tiny_config(weight_tying=True).to_dict())
    with pytest.raises(StdecError, match="ties its output head to the input embeddings"):
        quant.check(model, "int8", CPU, torch.float32, head=True)


@needs_torchao
@pytest.mark.parametrize("make", [
    lambda: tiny_config(weight_tying=True), lambda: tiny_dream_config(tie_word_embeddings=True)])
def test_tied_embeddings_cannot_be_quantized(make):
    # one table is both the lookup and the head: quantizing it would quantize the head too
    model = skeleton(make().to_dict())
    with pytest.raises(StdecError) as err:
        quant.check(model, "int8", CPU, torch.float32, embeddings=True)
    assert "ties its output head to the input embeddings" in one_sentence(err)
    assert "drop quantize_embeddings" in str(err.value)


@needs_torchao
def test_int4_embeddings_need_a_width_that_groups():
    model = skeleton(tiny_config(d_model=48, n_heads=3).to_dict())
    quant.check(model, "int8", CPU, torch.float32, embeddings=True)  # int8: any width
    with pytest.raises(StdecError) as err:
        quant.check(model, "int4", CPU, torch.float32, embeddings=True)
    assert "model.transformer.wte is 48 wide; use quantize int8" in one_sentence(err)


@needs_torchao
def test_a_quantized_model_is_not_saved_as_if_float(tmp_path):
    with pytest.raises(StdecError, match="pass quantize when loading it"):
        stdec.save_model(quantized("llada", "int8"), tmp_path / "q")
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("mode, head, embeddings, words", [
    ("int3", False, False, "quantize must be one of int8, int4"),
    (None, True, False, "quantize_head (--quantize-head) quantizes the output head"),
    (None, False, True, "quantize_embeddings (--quantize-embeddings) quantizes the input "
                        "embedding table along with the linear layers, but no quantize mode "
                        "is set"),
])
def test_bad_quantize_options_are_refused(checkpoint, no_weights, mode, head, embeddings,
                                          words):
    with pytest.raises(StdecError) as err:
        stdec.load(checkpoint, device="cpu", quantize=mode, quantize_head=head,
                   quantize_embeddings=embeddings)
    assert words in one_sentence(err)
