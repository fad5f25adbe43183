import pytest
import torch

from odegrad.testing import RandomMLPField


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def mlp_field():
    """A small autonomous float64 tanh MLP vector field ``[..., 2] -> [..., 2]``."""
    return RandomMLPField(2, 16, 1, seed=0, gain=0.6)


@pytest.fixture
def no_recompiles():
    """torch.compile with a fresh cache in which a recompilation is an error."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield
    torch._dynamo.reset()
