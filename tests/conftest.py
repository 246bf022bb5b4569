import pytest
import torch

from stdec.testing import random_checkpoint, random_model, tiny_config


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny random LLaDA checkpoint with a tokenizer, written once per test session."""
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", peak=16.0)


@pytest.fixture
def tiny_model():
    return random_model(tiny_config(), peak=16.0)
