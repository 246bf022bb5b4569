"""benchmarks/testbed_card.py: the bar lines it prints and the vision testbed's card."""

import importlib.util
import json
from pathlib import Path

from stdec.testing import random_llava_checkpoint

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "testbed_card.py"
spec = importlib.util.spec_from_file_location("testbed_card", SCRIPT)
testbed_card = importlib.util.module_from_spec(spec)
spec.loader.exec_module(testbed_card)


def vision_table(vanilla, four, tpf_09, stdec, seconds=60.0) -> dict:
    rows = testbed_card.vision_rows(0.95, {"tau_high": 0.99})
    figures = [(vanilla, 0.9), (four, 3.6), (vanilla, tpf_09), (vanilla, 2.5), (stdec, 2.6)]
    return {("vision", row): {"accuracy": acc, "tpf": tpf, "n": 400, "seconds": seconds}
            for row, (acc, tpf) in zip(rows, figures, strict=True)}


def test_vision_rows_pass_the_tuned_settings():
    rows = testbed_card.vision_rows(0.95, {"tau_high": 0.99, "tau_low": 0.9})
    assert rows["threshold 0.95 (dev-tuned)"] == {"policy": "threshold", "tau": 0.95}
    assert rows["stdec (dev-tuned)"] == {"policy": "stdec", "tau_high": 0.99, "tau_low": 0.9}
    assert list(rows)[:3] == list(testbed_card.ROWS)


def test_vision_checks_say_met_and_missed_with_the_figures():
    met = testbed_card.vision_checks(vision_table(0.85, 0.70, 2.0, 0.84))
    assert all(line.endswith("met") or "met; its TPF" in line for line in met), met
    assert "85.0% (bar >= 80%)" in met[0] and "loses 15.0 points" in met[1]
    assert "TPF 2.60 against the dev-tuned threshold's 2.50" in met[3]
    missed = testbed_card.vision_checks(vision_table(0.75, 0.70, 7.0, 0.70, seconds=130))
    assert [("MISSED" in line) for line in missed] == [True] * 5
    assert "-5.0 points from vanilla" in missed[3]


def test_the_vision_card_names_the_recipe_the_log_and_the_bars(tmp_path):
    folder = random_llava_checkpoint(tmp_path / "ckpt")
    config = {"out": "x", "steps": 2000, "d_model": 128, "seed": 0, "device": ""}
    log = [{"step": 1000, "loss": 0.2, "dev": 0.5, "elapsed_s": 60.0},
           {"step": 2000, "loss": 0.1, "dev": 0.86, "elapsed_s": 120.0}]
    (folder / "train_log.json").write_text(json.dumps(
        {"config": config, "hardware": "a test machine", "log": log}))
    text = testbed_card.card(folder, vision_table(0.85, 0.70, 2.0, 0.84), None, "dual",
                             vision=True, tuned_tau=0.8)
    assert "stdec train --tasks vision --steps 2000 --d-model 128 --seed 0 --out OUT" in text
    assert "2 min on a test machine" in text and "86% at step 2000" in text
    assert "| vision | stdec (dev-tuned) | 84.0 | 2.60 | 400 | 60 |" in text
    assert "--cache dual --tuned-tau 0.8` from the repository root" in text


def test_the_card_carries_the_history_the_log_does_not_hold(tmp_path):
    folder = random_llava_checkpoint(tmp_path / "ckpt")
    first = random_llava_checkpoint(tmp_path / "first")
    # the shapes an --init checkpoint sets are not options of the command (the CLI refuses them)
    config = {"steps": 10, "d_model": 128, "vision_hidden": 64, "init": str(first), "seed": 0}
    (folder / "train_log.json").write_text(json.dumps({"config": config, "log": []}))
    text = testbed_card.card(folder, vision_table(0.85, 0.70, 2.0, 0.84), None, "dual",
                             vision=True, history="`first` was made by ...\n")
    recipe = text.index(f"stdec train --tasks vision --steps 10 --init {first} --seed 0 --out OUT")
    assert recipe < text.index("`first` was made by ...\n\nseed 0;")
