"""EOS stop on scripted models: a row is filled with EOS only once every position before its
first end token is decoded, whatever is more confident; every end id counts; the trace
records the fill. Expected ids, NFE and trace are worked out by hand from each script."""

import math
from dataclasses import replace

import pytest
from scripted import EOS, Scripted, peaked

from stdec.decoding.config import DecodeConfig
from stdec.decoding.engine import decode

PREDS = [5, 6, EOS, 7, 8, 9, 10, 11]
CFG = DecodeConfig(policy="threshold", gen_length=8, block_length=8, tau=0.9, trace=True,
                   stop_at_eos=True)


def tail_first(n):
    """Step 1: only the EOS at position 2 is sure. Later: the tail after it (0.95) is surer
    than the prefix before it (0.5, 0.4), which the at-least-one rule then takes one a step."""
    if n == 0:
        return peaked(PREDS, [0.2, 0.1, 0.99, 0.3, 0.3, 0.3, 0.3, 0.3])
    return peaked(PREDS, [0.5, 0.4, 0.99, 0.95, 0.95, 0.95, 0.95, 0.95])


def test_no_fill_while_the_prefix_before_eos_is_masked():
    # step 1: EOS at 2 (positions 0, 1 still masked: no fill); step 2: the tail 3..7 passes
    # tau with its own ids; steps 3, 4: positions 0 then 1
    out = decode(Scripted(tail_first), [[3, 4]], CFG)
    assert out.ids[0].tolist() == [5, 6, EOS, 7, 8, 9, 10, 11]
    assert out.trace.step[0].tolist() == [3, 4, 1, 2, 2, 2, 2, 2]
    assert out.trace.confidence[0].tolist() == pytest.approx([0.5, 0.4, 0.99] + [0.95] * 5)
    s = out.stats[0]
    assert (s.nfe, s.gen_tokens, s.tpf) == (4, 2, 0.5)
    off = decode(Scripted(tail_first), [[3, 4]], replace(CFG, stop_at_eos=False))
    assert off.ids.tolist() == out.ids.tolist() and off.stats[0].nfe == 4


def test_fill_once_the_prefix_is_decoded_and_the_trace_shows_it():
    script = lambda n: peaked(PREDS, [0.5, 0.4, 0.99, 0.1, 0.1, 0.1, 0.1, 0.1])  # noqa: E731
    out = decode(Scripted(script), [[3]], CFG)
    # step 1 EOS; steps 2, 3 positions 0, 1; then the masks after the EOS are filled at step 3
    assert out.ids[0].tolist() == [5, 6, EOS, EOS, EOS, EOS, EOS, EOS]
    assert out.trace.step[0].tolist() == [2, 3, 1, 3, 3, 3, 3, 3]
    conf = out.trace.confidence[0].tolist()
    assert conf[:3] == pytest.approx([0.5, 0.4, 0.99]) and all(math.isnan(c) for c in conf[3:])
    assert (out.stats[0].nfe, out.stats[0].gen_tokens) == (3, 2)
    # without the stop the tail is decoded one position a step, left to right (equal 0.1)
    off = decode(Scripted(script), [[3]], replace(CFG, stop_at_eos=False))
    assert off.ids[0].tolist() == PREDS
    assert off.trace.step[0].tolist() == [2, 3, 1, 4, 5, 6, 7, 8]
    assert (off.stats[0].nfe, off.stats[0].gen_tokens) == (8, 2)


def test_extra_end_ids_stop_and_fill_with_eos():
    eot, other = 13, 14  # e.g. <|eot_id|>; EOS (1) is the fill
    preds = [5, 6, eot, 7, 8, other, 10, 11]
    script = lambda n: peaked(preds, [0.5, 0.4, 0.99, 0.1, 0.1, 0.1, 0.1, 0.1])  # noqa: E731
    out = decode(Scripted(script), [[3]], CFG, eos_ids=[eot])
    assert out.ids[0].tolist() == [5, 6, eot, EOS, EOS, EOS, EOS, EOS]
    assert (out.stats[0].nfe, out.stats[0].gen_tokens) == (3, 2)
    # not an end id: decoded like any token, one a step (nothing reaches tau)
    plain = decode(Scripted(script), [[3]], CFG)
    assert plain.ids[0].tolist() == preds
    assert (plain.stats[0].nfe, plain.stats[0].gen_tokens) == (8, 8)
    # the first of several end ids ends the text
    both = decode(Scripted(script), [[3]], replace(CFG, stop_at_eos=False),
                  eos_ids=[other, eot])
    assert both.ids[0].tolist() == preds and both.stats[0].gen_tokens == 2


def test_eos_in_a_later_block_finishes_the_row():
    # 16 tokens in two blocks; block 0 at once; EOS at 10 in block 1, positions 8, 9 after it
    preds = [20, 21, 22, 23, 24, 25, 26, 27, 5, 6, EOS, 7, 8, 9, 10, 11]
    confs = [0.95] * 8 + [0.5, 0.4, 0.99, 0.95, 0.95, 0.95, 0.95, 0.95]

    def script(n):
        if n == 0:
            return peaked(preds[:8], confs[:8], vocab=32)
        # the block-1 forwards see that block's 8 positions; step 2 makes only EOS sure
        c = [0.2, 0.1, 0.99, 0.3, 0.3, 0.3, 0.3, 0.3] if n == 1 else confs[8:]
        return peaked(preds[8:], c, vocab=32)

    cfg = replace(CFG, gen_length=16)
    out = decode(Scripted(script, vocab=32), [[3]], cfg)
    assert out.ids[0].tolist() == preds
    assert out.trace.step[0].tolist() == [1] * 8 + [4, 5, 2, 3, 3, 3, 3, 3]
    assert (out.stats[0].nfe, out.stats[0].gen_tokens) == (5, 10)


def test_generate_cuts_the_text_at_the_tokenizers_end_of_turn(checkpoint):
    import stdec

    _, tok = stdec.load(checkpoint)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    text = tok("Tom has", add_special_tokens=False)["input_ids"]
    tail = tok(" apples dog cat", add_special_tokens=False)["input_ids"]
    assert eot != tok.eos_token_id and len(text) + 1 < 8
    V, k = len(tok), len(text)
    preds = (text + [eot] + tail * 8)[:8]

    def script(n):
        # first only <|eot_id|> is sure; then the tail after it is surer than the text before
        prefix = [0.5 - 0.05 * i for i in range(k)]
        c = [0.2] * k + [0.99] + [0.3] * (7 - k) if n == 0 else prefix + [0.99] + [0.95] * (7 - k)
        return peaked(preds, c, vocab=V)

    model = Scripted(script, vocab=V)
    model.config = replace(model.config, vocab_size=V, mask_token_id=tok.mask_token_id,
                           eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = stdec.generate(model, tok, "hi", policy="threshold", tau=0.9, gen_length=8,
                         block_length=8)
    assert out.ids[0].tolist() == preds  # the tail after <|eot_id|> was decoded, not filled
    assert out.texts == ["Tom has"] and out.stats[0].gen_tokens == k
