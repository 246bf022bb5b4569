"""The bundled testbed model: it loads by name and decodes test prompts to their gold answers.

The problems below are ones the bundled checkpoint answers correctly with vanilla decoding
(fixed, one token per step, dual cache), checked when it was bundled: the test pins that the
shipped weights, tokenizer and lengths still work together, not the model's accuracy (the
model card holds that).
"""

import pytest

import stdec
from stdec.api import resolve_model_path
from stdec.decoding.config import DecodeConfig
from stdec.tasks import get_task
from stdec.tasks.evaluate import decode_problems
from stdec.tasks.lengths import read_gen_lengths

# test-split indices per task, answered correctly when the checkpoint was bundled
SOLVED = {"lists": [0, 1, 2, 3], "gsm": [5, 9, 11], "code": [0, 1, 2]}


@pytest.fixture(scope="module")
def testbed():
    return stdec.load("testbed")


@pytest.mark.parametrize("name", list(SOLVED))
def test_bundled_testbed_decodes_test_prompts_to_gold(testbed, name):
    model, tokenizer = testbed
    task = get_task(name)
    problems = [task.problems("test")[i] for i in SOLVED[name]]
    gen = read_gen_lengths(resolve_model_path("testbed"))[name]["gen_length"]
    config = DecodeConfig(policy="fixed", cache="dual", gen_length=gen, block_length=32)
    records, _ = decode_problems(model, tokenizer, task, problems, config, batch_size=8)
    assert [r.correct for r in records] == [True] * len(problems), [r.output for r in records]
