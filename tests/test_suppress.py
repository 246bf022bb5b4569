"""suppress_ids: ids never predicted at a masked position, under every rule and cache mode;
their logits are -inf before both the prediction and the confidence (LLaDA-V's official
generate). Reached from every entrance through DecodeConfig."""

import argparse

import pytest
import torch
from reference import config
from scripted import Scripted

from stdec.api import generate
from stdec.cli import add_decode_options, decode_option_names
from stdec.decoding import registry
from stdec.decoding.config import CACHE_MODES, DecodeConfig, build, check_vocab
from stdec.decoding.engine import confidence, decode
from stdec.errors import StdecError
from stdec.testing import random_model, tiny_config

# every position: id 3 would win; with it suppressed, 4 wins with 0.3 / 0.5
P = {3: 0.5, 4: 0.3, 5: 0.2}


@pytest.mark.parametrize("policy", registry.names())
def test_a_suppressed_id_is_never_predicted_and_confidence_renormalises(policy):
    cfg = config(policy, gen_length=16, block_length=8, stop_at_eos=False, trace=True)
    plain = decode(Scripted(lambda n: [P]), [[8, 9]], cfg)
    assert plain.ids[0].tolist() == [3] * 16
    out = decode(Scripted(lambda n: [P]), [[8, 9]], build({"suppress_ids": "3"},
                                                          cfg.options()))
    assert out.ids[0].tolist() == [4] * 16
    assert out.trace.confidence[0].tolist() == pytest.approx([0.6] * 16, rel=1e-5)


def test_sampling_never_draws_a_suppressed_id():
    for seed in range(3):
        cfg = DecodeConfig(policy="fixed", gen_length=16, block_length=8, stop_at_eos=False,
                           temperature=1.0, seed=seed, suppress_ids=(3, 5))
        assert set(decode(Scripted(lambda n: [P]), [[8]], cfg).ids[0].tolist()) == {4}


def test_confidence_sets_suppressed_logits_to_minus_infinity():
    logits = torch.tensor([[[0.0, 3.0, 1.0, 2.0]]])  # id 1 would win; the mask is id 2
    conf, pred = confidence(logits.clone(), 2, 0.0, None, torch.tensor([1]))
    assert pred.item() == 3
    assert conf.item() == pytest.approx(torch.tensor([0.0, 2.0]).softmax(0)[1].item())


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return random_model(tiny_config(vocab_size=64), seed=3, peak=6.0)


def frequent(ids: torch.Tensor) -> int:
    return int(torch.mode(ids.flatten()).values)


@pytest.mark.parametrize("cache", CACHE_MODES)
@pytest.mark.parametrize("policy", registry.names())
def test_every_rule_and_cache_skips_the_id_that_would_win(model, policy, cache):
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    cfg = config(policy, cache, gen_length=16, block_length=8, stop_at_eos=False)
    top = frequent(decode(model, prompts, cfg).ids)
    out = decode(model, prompts, build({"suppress_ids": [top]}, cfg.options())).ids
    assert top not in out.tolist()[0] + out.tolist()[1]


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_rows_with_and_without_suppression_batch_as_alone(model, cache):
    prompts = [[5, 6, 7, 8], [9, 10, 11], [12, 13]]
    base = config("stdec", cache, gen_length=16, block_length=8, stop_at_eos=False)
    top = frequent(decode(model, prompts, base).ids)
    cfgs = [base, build({"suppress_ids": [top]}, base.options()),
            build({"suppress_ids": [top, top + 1]}, base.options())]
    together = decode(model, prompts, cfgs).ids
    for p, c, row in zip(prompts, cfgs, together, strict=True):
        assert decode(model, [p], c).ids[0].tolist() == row.tolist()


@pytest.mark.parametrize("given, want", [
    ("126081,126080", (126080, 126081)),  # a command line
    ("126081 126080", (126080, 126081)),  # lm-eval's model_args, which split on commas
    ("[126347, 126346]", (126346, 126347)),  # a JSON list
    ([4, 2, 4], (2, 4)),  # the server's extra_body, a Python list
    ("none", ()), ("", ()), (None, ()),
])
def test_suppress_ids_parse_from_text_and_lists(given, want):
    assert build({"suppress_ids": given}).suppress_ids == want


@pytest.mark.parametrize("bad", ["a,b", "-3", "1.5", [1.5], [True], [-1], "[1, x]"])
def test_bad_suppress_ids_fail_in_one_sentence(bad):
    with pytest.raises(StdecError, match="suppress_ids must be token ids"):
        build({"suppress_ids": bad})


def test_ids_beyond_the_vocabulary_are_refused_before_decoding(model):
    check_vocab(DecodeConfig(suppress_ids=(63,)), 64)
    with pytest.raises(StdecError, match="suppress_ids has 64, which is not a token id of "
                       "this model; its ids run from 0 to 63"):
        check_vocab(DecodeConfig(suppress_ids=(3, 64)), 64)


def test_generate_refuses_an_id_outside_the_vocabulary(tmp_path):
    import stdec
    from stdec.testing import random_checkpoint

    m, tok = stdec.load(random_checkpoint(tmp_path / "m"))
    with pytest.raises(StdecError, match="not a token id of this model"):
        generate(m, tok, "2+3=", gen_length=8, block_length=8, suppress_ids=[len(tok) + 5])


def test_the_cli_flag_reaches_the_config():
    parser = argparse.ArgumentParser()
    add_decode_options(parser, "decoding")
    args = parser.parse_args(["--suppress-ids", "7,3"])
    assert build(decode_option_names(args)).suppress_ids == (3, 7)


def test_lm_eval_model_args_reach_the_config():
    pytest.importorskip("lm_eval")
    from lm_eval.utils import simple_parse_args_string

    from stdec.lm_eval import decode_config

    args = simple_parse_args_string("policy=fixed,suppress_ids=126081 126080,gen_length=8")
    assert decode_config(args).suppress_ids == (126080, 126081)


def test_the_server_reads_suppress_ids_from_the_body():
    from stdec.serve import protocol as p
    from stdec.serve.serving import decode_options

    body = p.parse(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
                   b'"suppress_ids": [9, 8]}', p.ChatRequest, 1 << 20)
    assert decode_options(body, {}).suppress_ids == (8, 9)
