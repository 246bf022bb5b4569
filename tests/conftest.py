import pytest
import torch

from stdec import tasks
from stdec.decoding import registry
from stdec.testing import random_checkpoint, random_model, tiny_config


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Whatever a test changes of the process's global state (torch's thread count, default
    dtype, dynamo's limits, the task and rule registries) is put back after it, so that no test sees
    another's settings and the suite passes in any order."""
    import torch._dynamo.config as dynamo

    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    recompile_limit = dynamo.recompile_limit
    registered, rules = dict(tasks._CLASSES), dict(registry.RULES)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    dynamo.recompile_limit = recompile_limit
    tasks._CLASSES.clear()
    tasks._CLASSES.update(registered)
    registry.RULES.clear()
    registry.RULES.update(rules)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny random LLaDA checkpoint with a tokenizer, written once per test session."""
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", peak=16.0)


@pytest.fixture
def tiny_model():
    return random_model(tiny_config(), peak=16.0)
