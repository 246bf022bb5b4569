"""experiments/grow_depth.py: a grown checkpoint computes what the old one did, and loads."""

import grow_depth
import pytest
import torch

import stdec


def test_grown_model_gives_the_old_logits(tiny_model):
    grown = grow_depth.grow(tiny_model)
    assert grown.config.n_layers == 2 * tiny_model.config.n_layers
    x = torch.randint(3, tiny_model.config.vocab_size, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(grown(x), tiny_model(x))
    old, new = (dict(b.named_parameters()) for b in grown.model.transformer.blocks[:2])
    for name, param in new.items():  # the copy reads as its original does, and writes nothing
        if name.startswith(grow_depth.ZEROED):
            assert not param.any(), name
        else:
            assert torch.equal(param, old[name]), name


def test_writes_a_loadable_checkpoint_and_never_overwrites(checkpoint, tmp_path, capsys):
    out = tmp_path / "grown"
    grow_depth.main(["--model", str(checkpoint), "--out", str(out)])
    model, tokenizer = stdec.load(str(out))
    assert model.config.n_layers == 2 * stdec.load(str(checkpoint))[0].config.n_layers
    assert tokenizer.mask_token_id == model.config.mask_token_id
    assert "--n-layers" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="already exists"):
        grow_depth.main(["--model", str(checkpoint), "--out", str(out)])
