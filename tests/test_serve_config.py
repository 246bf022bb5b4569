"""ServerConfig checks every value when it is built: one sentence naming the bad value."""

from dataclasses import FrozenInstanceError

import pytest

from stdec.decoding.config import DecodeConfig
from stdec.errors import StdecError
from stdec.serve import ServerConfig

BASE = {"name": "m", "defaults": DecodeConfig()}


def test_defaults_and_image_dir(tmp_path):
    config = ServerConfig(**BASE, image_dir=str(tmp_path))
    assert config.image_dir == tmp_path.resolve()
    assert (config.host, config.port, config.max_batch, config.max_queue) == ("127.0.0.1", 8000,
                                                                               8, 64)
    with pytest.raises(FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("bad, words", [
    ({"name": ""}, "name"), ({"defaults": ["stdec"]}, "DecodeConfig"),
    ({"defaults": {"policy": "threshold", "tau": 2}}, "tau must be in (0, 1], got 2"),
    ({"host": ""}, "host"), ({"port": 0}, "1..65535, got 0"), ({"port": 65536}, "65536"),
    ({"port": "80"}, "'80'"), ({"max_batch": 0}, "max_batch"), ({"max_batch": True}, "True"),
    ({"max_queue": 0}, "max_queue"), ({"timeout": 0}, "timeout must be > 0"),
    ({"timeout": float("nan")}, "nan"), ({"drain": -1}, "drain must be >= 0"),
    ({"max_body_bytes": 0}, "max_body_bytes"), ({"image_dir": "/no/such/folder"}, "not a folder"),
])
def test_a_bad_value_is_named(bad, words):
    with pytest.raises(StdecError, match="got|not a folder") as err:
        ServerConfig(**{**BASE, **bad})
    message = str(err.value)
    assert words in message and message.count(". ") == 0 and message.endswith("."), message
