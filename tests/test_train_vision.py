"""The vision testbed recipe: batches lay the picture's vectors where the prompt's <image>
stands, one loss step trains the tower, the projector and the language model, and a tower stage
aligns the picture's vectors with the words that name them."""

import json

import torch
from transformers import PreTrainedTokenizerFast

from stdec.models import load_model
from stdec.models.llada_v import IMAGE_TOKEN_INDEX
from stdec.testbed.suites.vision import VisionTask
from stdec.testbed.tokenizer import train_tokenizer
from stdec.testbed.train_vision import VisionTrainConfig, batch_inputs, encode, loss_at, new_model


def test_one_step_trains_every_part():
    task = VisionTask({"train": 40, "dev": 4, "test": 4})
    problems = task.problems("train")[:4]
    tok = train_tokenizer([t for p in task.problems("train") for t in (p.prompt, p.answer)],
                          vocab_size=300)
    cfg = VisionTrainConfig(d_model=32, n_layers=1, mlp_hidden_size=64, vision_hidden=32,
                            vision_layers=1, patch_size=16)
    model = new_model(cfg, tok)
    rows = encode(tok, problems)
    assert all(p.count(IMAGE_TOKEN_INDEX) == 1 for p, _ in rows)
    scenes = [p.meta["scene"] for p in problems]
    x, pos, keys, P, table = batch_inputs(model, rows, scenes, tok.pad_token_id,
                                          tok.eos_token_id, 16)
    assert table.shape == (4 * 10, 32)  # 3x3 vectors of a 48-pixel tile and the newline
    for b, (p, a) in enumerate(rows):
        image = x[b] < 0
        assert image.sum() == 10 and torch.equal(x[b, image], torch.arange(-1 - 10 * b,
                                                                           -11 - 10 * b, -1))
        assert keys[b].sum() == len(p) - 1 + 10 + 16 and x[b, P] == a[0]
    loss = loss_at(model, rows, scenes, {"pad": tok.pad_token_id, "eos": tok.eos_token_id,
                                         "mask": tok.mask_token_id}, 16,
                   torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    for part in (model.vision_tower, model.mm_projector, model.language_model):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert model.image_newline.grad.abs().sum() > 0


def test_stdec_train_tasks_vision_writes_a_vision_checkpoint(tmp_path, capsys):
    from stdec.cli import main
    from stdec.models import load_model
    from stdec.models.llada_v import LLaDAVModel

    out = tmp_path / "run"
    main(["train", "--tasks", "vision", "--out", str(out), "--steps", "2", "--train-size", "40",
          "--d-model", "32", "--n-layers", "1", "--mlp-hidden-size", "64", "--vocab-size", "300",
          "--vision-hidden", "32", "--vision-layers", "1", "--eval-every", "2",
          "--eval-limit", "2", "--save-every", "2", "--threads", "1", "--device", "cpu"])
    assert f"wrote the trained checkpoint to {out}" in capsys.readouterr().out
    model = load_model(out)
    assert isinstance(model, LLaDAVModel) and model.config.text.d_model == 32
    assert (out / "checkpoint" / "optimizer").is_dir()  # resumable


def test_the_pictures_vectors_start_at_the_token_embeddings_scale():
    from stdec.models.llada_v import to_pixels
    from stdec.testbed.suites.vision import render

    task = VisionTask({"train": 40, "dev": 4, "test": 4})
    problems = task.problems("train")
    tok = train_tokenizer([t for p in problems for t in (p.prompt, p.answer)], vocab_size=300)
    model = new_model(VisionTrainConfig(), tok)
    with torch.no_grad():
        feats = model.encode_images(torch.stack([to_pixels(render(p.meta["scene"]))
                                                 for p in problems[:8]]))
    words = model.language_model.get_input_embeddings().weight
    ratio = feats.norm(dim=-1).mean() / words.norm(dim=-1).mean()
    assert 0.5 < ratio < 2, ratio  # at the projector's default init: about 20


def test_init_starts_from_a_text_checkpoints_language_model(tmp_path):
    from stdec.api import load
    from stdec.testbed.train_vision import train_vision
    from stdec.testing import random_checkpoint

    text, _ = load(random_checkpoint(tmp_path / "text"), dtype="float32", fuse=False)
    cfg = VisionTrainConfig(out=str(tmp_path / "run"), init=str(tmp_path / "text"), steps=1,
                            train_size=40, vision_hidden=32, vision_layers=1, eval_every=0,
                            save_every=1, device="cpu")
    out = train_vision(cfg, log_to=lambda _: None)
    model = load_model(out)
    assert model.config.text.d_model == text.config.d_model != cfg.d_model
    words = len(PreTrainedTokenizerFast.from_pretrained(str(out)))  # the task's words added
    for (name, theirs), ours in zip(text.state_dict().items(),
                                    model.language_model.state_dict().values(), strict=True):
        # one step moved the weights, not the layout; the vocabulary rows grew by the words
        vocabulary = name.endswith(("wte.weight", "ff_out.weight")) and "blocks" not in name
        expected = (words, *theirs.shape[1:]) if vocabulary else theirs.shape
        assert ours.shape == expected, name


def test_init_from_a_vision_testbed_trains_it_on_with_the_projector_aligned_again(tmp_path):
    from stdec.testbed.train_vision import train_vision

    tiny = dict(train_size=40, d_model=32, n_layers=1, mlp_hidden_size=64, vocab_size=300,
                vision_hidden=32, vision_layers=1, eval_every=0, save_every=1, device="cpu")
    first = train_vision(VisionTrainConfig(out=str(tmp_path / "first"), steps=1, **tiny),
                         log_to=lambda _: None)
    logs = []
    out = train_vision(VisionTrainConfig(out=str(tmp_path / "on"), init=str(first), steps=1,
                                         tower_steps=2, **tiny), log_to=logs.append)
    assert json.loads(logs[-1])["tower_step"] == 2  # stage 0 ran on the loaded tower
    before, after = load_model(first).state_dict(), load_model(out).state_dict()
    assert before.keys() == after.keys()
    assert all(before[k].shape == after[k].shape for k in before)  # the same model, trained on
    assert len(PreTrainedTokenizerFast.from_pretrained(str(out))) == len(
        PreTrainedTokenizerFast.from_pretrained(str(first)))


def test_stdec_train_refuses_a_tower_shape_with_a_vision_init(tmp_path, capsys):
    from stdec.cli import main
    from stdec.testing import random_llava_checkpoint

    init = random_llava_checkpoint(tmp_path / "v")
    rc = main(["train", "--tasks", "vision", "--init", str(init), "--vision-hidden", "64",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc != 0 and "--vision-hidden comes from --init's vision checkpoint" in err, err


def test_cell_labels_name_what_each_patch_holds():
    from stdec.testbed.train_vision import cell_labels

    shapes = {"type": "shapes", "objects": [["square", "blue", 0, 2, 6],
                                            ["triangle", "red", 2, 1, 7]]}
    shape, color, value, cell = cell_labels(shapes)
    assert shape == [0, 0, 2, 0, 0, 0, 0, 3, 0] and color == [0, 0, 3, 0, 0, 0, 0, 1, 0]
    assert value == [0] * 9 and cell == list(range(9))
    bars = {"type": "bars", "labels": ["A", "B", "C"], "values": [4, 9, 1],
            "colors": ["green", "green", "orange"]}
    shape, color, value, _ = cell_labels(bars)
    assert value == [4, 9, 1] * 3 and color == [2, 2, 6] * 3 and shape == [0] * 9


def test_the_tower_learns_what_each_cell_holds_in_the_language_models_words():
    from stdec.testbed.train_vision import pretrain_tower

    task = VisionTask({"train": 200, "dev": 4, "test": 4})
    scenes = [p.meta["scene"] for p in task.problems("train")]
    tok = train_tokenizer([t for p in task.problems("train") for t in (p.prompt, p.answer)],
                          vocab_size=300)
    model = new_model(VisionTrainConfig(d_model=32, n_layers=1, mlp_hidden_size=64), tok)
    logs = []
    pretrain_tower(model, scenes, VisionTrainConfig(tower_steps=200), tok, logs.append)
    right = json.loads(logs[-1])["cells_right"]
    # always guessing the commonest label: shape 83%, colour 45%, bar 62% of the cells
    assert right["shape"] > 0.95 and right["color"] > 0.8 and right["bar"] > 0.8, right
    # and the projected vectors sit near their words' sum (off_words: squared distance in
    # units of one word's mean squared norm; a cell's words are two to four)
    assert json.loads(logs[-1])["off_words"] < 0.2, logs


def test_after_the_tower_stage_only_the_language_model_trains_even_when_resumed(tmp_path,
                                                                              monkeypatch):
    # (and not its input embeddings: the picture's vectors were aligned with them)
    import stdec.testbed.train_vision as tv

    aligned = {}

    def pretrain_and_remember(model, *args):
        real_pretrain(model, *args)
        aligned.update({k: v.clone() for k, v in model.state_dict().items()})

    real_pretrain = tv.pretrain_tower
    monkeypatch.setattr(tv, "pretrain_tower", pretrain_and_remember)
    cfg = dict(out=str(tmp_path / "run"), train_size=40, d_model=32, n_layers=1,
               mlp_hidden_size=64, vocab_size=300, vision_hidden=32, vision_layers=1,
               eval_every=0, save_every=1, device="cpu", tower_steps=3, lr=1e-2, warmup=1)
    for steps in (1, 3):  # the second run resumes the first's checkpoint
        model = load_model(tv.train_vision(VisionTrainConfig(steps=steps, **cfg),
                                           log_to=lambda _: None))
        state = model.state_dict()
        for name, before in aligned.items():
            frozen = name.startswith(("vision_tower.", "mm_projector.")) or name.endswith(
                ".wte.weight")
            assert torch.equal(state[name], before) == frozen, name


def test_words_the_text_tokenizer_splits_get_tokens_of_their_own():
    from stdec.api import load
    from stdec.testbed.train_vision import add_words

    text, tok = load("testbed", dtype="float32", device="cpu", fuse=False)
    before = len(tok)
    pieces = tok(" yellow", add_special_tokens=False).input_ids
    assert len(pieces) > 1  # the text testbed spells it out
    old = torch.tensor([tok("What is 3 + 4?", add_special_tokens=False).input_ids])
    grown = add_words(text, tok, ["The yellow circle is in the top left.", "Bar B reaches 7."])
    sentence = "The yellow circle is in the top left of the picture."
    ids = tok(sentence, add_special_tokens=False).input_ids
    assert [tok.decode([i]) for i in ids][:4] == ["The", " yellow", " circle", " is"]
    assert tok.decode(ids) == sentence and len(tok) == grown.config.vocab_size > before
    yellow = tok.convert_tokens_to_ids(" yellow")
    wte = grown.get_input_embeddings().weight
    assert torch.allclose(wte[yellow], text.get_input_embeddings().weight[pieces].mean(0))
    with torch.no_grad():  # what the old tokens meant is untouched
        assert torch.allclose(grown(old)[..., :before], text(old), atol=1e-5)
