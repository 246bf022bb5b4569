"""ServerConfig checks every value when it is built: one sentence naming the bad value."""

from dataclasses import FrozenInstanceError

import pytest

from stdec.decoding.config import DecodeConfig
from stdec.errors import StdecError
from stdec.serve import ServerConfig
from stdec.serve.serving import with_max_tokens

BASE = {"name": "m", "defaults": DecodeConfig()}


def test_defaults_and_image_dir(tmp_path, monkeypatch):
    config = ServerConfig(**BASE, image_dir=str(tmp_path))
    assert config.image_dir == tmp_path.resolve()
    (tmp_path / "pictures").mkdir()
    monkeypatch.chdir(tmp_path)  # a relative folder: from where the server starts
    assert ServerConfig(**BASE, image_dir="pictures").image_dir == tmp_path.resolve() / "pictures"
    assert (config.host, config.port, config.max_batch, config.max_queue) == ("127.0.0.1", 8000,
                                                                               8, 64)
    with pytest.raises(FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("bad, words", [
    ({"name": ""}, "name"), ({"defaults": ["stdec"]}, "DecodeConfig"),
    ({"defaults": {"policy": "threshold", "tau": 2}}, "tau must be in (0, 1], got 2"),
    ({"host": ""}, "host"), ({"port": 0}, "1..65535, got 0"), ({"port": 65536}, "65536"),
    ({"port": "80"}, "'80'"), ({"max_batch": 0}, "max_batch"), ({"max_batch": True}, "True"),
    ({"max_queue": -1}, "max_queue must be an integer >= 0"),
    ({"max_prompt_tokens": 0}, "max_prompt_tokens"), ({"timeout": 0}, "timeout must be > 0"),
    ({"timeout": float("nan")}, "nan"), ({"drain": -1}, "drain must be >= 0"),
    ({"max_body_bytes": 0}, "max_body_bytes"), ({"image_dir": "/no/such/folder"}, "not a folder"),
])
def test_a_bad_value_is_named(bad, words):
    with pytest.raises(StdecError, match="got|not a folder") as err:
        ServerConfig(**{**BASE, **bad})
    message = str(err.value)
    assert words in message and message.count(". ") == 0 and message.endswith("."), message


def test_an_api_key_is_checked_and_never_shown():
    config = ServerConfig(**BASE, api_key="s3cret-key", max_queue=0)
    assert config.api_key == "s3cret-key" and "s3cret" not in repr(config)
    with pytest.raises(StdecError, match="api_key must be printable ASCII") as err:
        ServerConfig(**BASE, api_key="s3cret key")
    assert "s3cret" not in str(err.value)


def test_max_tokens_keeps_a_default_steps_pace():
    # the server's fixed rule: 16 steps over 32 tokens in blocks of 16, 8 steps a block
    defaults = DecodeConfig(policy="fixed", gen_length=32, block_length=16, steps=16).options()
    eight = with_max_tokens({}, defaults, 8)  # half a block: 4 steps
    assert (eight.gen_length, eight.steps, eight.k) == (8, 4, None)
    odd = with_max_tokens({}, defaults, 33)  # 8 steps a block is 2 tokens a step
    assert (odd.gen_length, odd.steps, odd.k) == (33, None, 2)
    mine = with_max_tokens({"steps": 33}, defaults, 33)  # the request's own steps stand
    assert (mine.gen_length, mine.steps) == (33, 33)
