import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class MLPField(torch.nn.Module):
    """Small autonomous MLP vector field used across tests."""

    def __init__(self, dim: int = 2, width: int = 16, dtype=torch.float64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, width), torch.nn.Tanh(),
                                       torch.nn.Linear(width, dim)).to(dtype)

    def forward(self, t, y):
        return self.net(y)


@pytest.fixture
def mlp_field():
    return MLPField()
