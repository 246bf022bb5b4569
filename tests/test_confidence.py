"""The confidence a rule sees is the model's own probability of the committed token (LLaDA's
definition), never the tempered one, with or without sampling."""

import pytest
import torch
from scripted import Scripted

from stdec.decoding import commit, engine
from stdec.decoding.config import DecodeConfig
from stdec.decoding.engine import decode

# every position: five candidate ids with these probabilities under the model, 0 elsewhere
P = {3: 0.4, 4: 0.3, 5: 0.15, 6: 0.1, 7: 0.05}


def cfg(**kw) -> DecodeConfig:
    return DecodeConfig(policy="fixed", gen_length=16, block_length=8, stop_at_eos=False,
                        trace=True, **kw)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampled_confidence_is_the_untempered_probability(temperature):
    seen = set()
    for seed in range(4):
        out = decode(Scripted(lambda n: [P]), [[8, 9]], cfg(temperature=temperature, seed=seed))
        ids, conf = out.ids[0].tolist(), out.trace.confidence[0].tolist()
        assert set(ids) <= set(P)
        assert conf == pytest.approx([P[t] for t in ids], rel=1e-5)
        seen.update(ids)
    assert len(seen) >= 3  # it did sample, not only take the argmax


def test_greedy_confidence_is_the_top_probability():
    out = decode(Scripted(lambda n: [P]), [[8, 9]], cfg())
    assert out.ids[0].tolist() == [3] * 16
    assert out.trace.confidence[0].tolist() == pytest.approx([0.4] * 16, rel=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 0.5])
def test_threshold_reads_the_untempered_confidence(temperature):
    # 0.8 on id 3 never reaches tau 0.9, so one position a step (the at-least-one rule);
    # tempered at 0.5 it would read 0.64 / (0.64 + 0.04) = 0.94 and pass
    out = decode(Scripted(lambda n: [{3: 0.8, 4: 0.2}]), [[8]], DecodeConfig(
        policy="threshold", tau=0.9, gen_length=8, block_length=8, stop_at_eos=False,
        trace=True, temperature=temperature, seed=1))
    assert out.stats[0].nfe == 8 and sorted(out.trace.step[0].tolist()) == list(range(1, 9))
    want = {3: 0.8, 4: 0.2}
    assert out.trace.confidence[0].tolist() == pytest.approx(
        [want[t] for t in out.ids[0].tolist()], rel=1e-5)


def test_the_mask_token_is_never_predicted():
    import torch

    from stdec.decoding.engine import confidence

    logits = torch.tensor([[[2.0, 0.0, 5.0, 1.0]]])  # the mask (id 2) is the most likely
    for temperature, generators in ((0.0, None), (0.7, [torch.Generator().manual_seed(0)])):
        conf, pred = confidence(logits.clone(), 2, temperature, generators)
        assert pred.item() != 2
        others = torch.tensor([2.0, 0.0, 1.0]).softmax(0)  # renormalised without the mask
        assert conf.item() == pytest.approx(others[[0, 1, 3].index(pred.item())].item())
    assert confidence(logits.clone(), 2, 0.0, None)[1].item() == 0


@pytest.mark.parametrize("temperature", [0.0, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_confidence_read_a_few_rows_at_a_time_is_the_same(monkeypatch, temperature, dtype):
    logits = torch.randn(5, 4, 50, generator=torch.Generator().manual_seed(0)).to(dtype)

    def run():
        gens = [torch.Generator().manual_seed(i) for i in range(5)] if temperature else None
        return engine.confidence(logits.clone(), 49, temperature, gens)

    whole = run()
    monkeypatch.setattr(commit, "CONFIDENCE_CHUNK", 2 * 4 * 50)  # two rows a chunk
    chunked = run()
    assert torch.equal(chunked[1], whole[1]) and torch.equal(chunked[0], whole[0])
    assert (whole[1] != 49).all()  # the mask id is never the prediction
