"""experiments/vision_reading.py: the picture stand-ins hold the scene, and each feed trains."""

import pytest
import torch
import vision_reading

from stdec.models.llada_v import to_pixels
from stdec.testbed.suites.vision import VisionTask, render

SHAPES_SCENE = {"type": "shapes", "objects": [["circle", "red", 0, 0, 6],
                                              ["square", "blue", 1, 1, 7]]}
BARS_SCENE = {"type": "bars", "labels": ["A", "B", "C"], "values": [3, 9, 1],
              "colors": ["green", "green", "red"]}


def test_describe_names_every_object_and_bar():
    assert vision_reading.describe(SHAPES_SCENE) == \
        "Objects: red circle at top left; blue square at center."
    assert vision_reading.describe(BARS_SCENE) == "Bars: A=3 green, B=9 green, C=1 red."


def test_scene_codes_differ_exactly_where_the_scenes_do():
    codes = vision_reading.SceneCodes(16, 1.0)
    moved = {"type": "shapes", "objects": [["circle", "red", 0, 0, 6],
                                           ["square", "blue", 2, 2, 7]]}
    a, b = codes(SHAPES_SCENE), codes(moved)
    assert a.shape == (9, 16)
    differs = (a - b).abs().sum(-1) > 0
    assert differs.nonzero().flatten().tolist() == [4, 8]  # the center and the bottom right
    bars = codes(BARS_SCENE)
    assert not torch.equal(bars[1], bars[7])  # the same bar in another cell
    raised = codes({**BARS_SCENE, "values": [3, 8, 1]})
    assert ((bars - raised).abs().sum(-1) > 0).nonzero().flatten().tolist() == [1, 4, 7]


def test_codes_can_start_at_the_embeddings_of_their_words():
    names = {}

    def embed(words):  # a distinct vector per name, remembered
        return names.setdefault(words, torch.randn(16))

    codes = vision_reading.SceneCodes(16, 1.0)
    codes.start_from_words(embed)
    red_circle_top_left = codes(SHAPES_SCENE)[0]
    assert torch.allclose(red_circle_top_left,
                          embed("red") + embed("circle") + embed("top left"))
    assert torch.allclose(codes(BARS_SCENE)[4], embed("9") + embed("green") + embed("center"))
    assert torch.allclose(codes(SHAPES_SCENE)[8], embed("bottom right"))  # an empty cell


def test_scenes_finds_a_picture_again_from_its_pixels():
    problems = VisionTask().problems("dev")[:5]
    scenes = vision_reading.Scenes()
    scenes.add(problems)
    for p in problems:
        assert scenes[to_pixels(render(p.meta["scene"]))] == p.meta["scene"]


@pytest.mark.parametrize("feed", ["pixels", "codes", "codes-from-words", "text"])
def test_each_feed_trains_and_reports(feed, capsys):
    words = ["--codes-from", "words"] if feed == "codes-from-words" else []
    vision_reading.main(["--feed", feed.removesuffix("-from-words"), *words, "--steps", "2",
                         "--eval-every", "2", "--eval-limit", "2", "--batch-size", "4",
                         "--threads", "1"])
    out = capsys.readouterr().out
    assert f"{feed.removesuffix('-from-words')} step 2: loss" in out
    assert "% (" in out.splitlines()[-1]  # the split by kind of question


def test_words_codes_without_the_codes_feed_are_refused(capsys):
    with pytest.raises(SystemExit):
        vision_reading.main(["--feed", "text", "--codes-from", "words"])
    assert "--codes-from words is for --feed codes" in capsys.readouterr().err
