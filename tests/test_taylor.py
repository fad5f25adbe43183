"""Taylor-mode arithmetic: every recurrence against nested torch.func.jvp in float64."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from odegrad.errors import InvalidInput, TaylorModeUnsupported
from odegrad.jet import Jet, jvp_coefficients, supported_ops, taylor_coefficients

D = 3
ORDER = 4


def _check(func, y0=None, t0=0.3, order=ORDER, tol=1e-12):
    if y0 is None:
        y0 = torch.randn(4, D, dtype=torch.float64) * 0.5
    t0 = torch.tensor(t0, dtype=torch.float64)
    got = taylor_coefficients(func, t0, y0, order)
    want = jvp_coefficients(func, t0, y0, order)
    assert len(got) == order + 1
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == y0.shape
        scale = max(1.0, float(w.detach().abs().max()))
        assert float((g - w).detach().abs().max()) <= tol * scale, f"coefficient {k}"
    return got


W = torch.randn(D, D, dtype=torch.float64) * 0.7
ELEMENTWISE = {
    "tanh": lambda t, y: torch.tanh(y @ W),
    "sigmoid": lambda t, y: torch.sigmoid(y @ W),
    "softplus": lambda t, y: F.softplus(y @ W, beta=2.0),
    "softplus_threshold": lambda t, y: F.softplus(10 * y @ W, beta=1.0, threshold=1.0),
    "exp": lambda t, y: torch.exp(0.3 * y @ W),
    "expm1": lambda t, y: torch.expm1(0.3 * y @ W),
    "log": lambda t, y: torch.log(2.0 + y @ W * 0.2),
    "log1p": lambda t, y: torch.log1p(y * y),
    "sin": lambda t, y: torch.sin(y @ W),
    "cos": lambda t, y: torch.cos(y @ W),
    "relu": lambda t, y: F.relu(y @ W) - y,
    "leaky_relu": lambda t, y: F.leaky_relu(y @ W, 0.2),
    "elu": lambda t, y: F.elu(y @ W, alpha=0.7),
    "silu": lambda t, y: F.silu(y @ W),
    "abs": lambda t, y: torch.abs(y @ W) - y,
    "product": lambda t, y: y * (y @ W),
    "sum_difference": lambda t, y: (y @ W) - y + 2.0 - (1.0 - y),
    "division": lambda t, y: y / (2.0 + y * y),
    "reciprocal": lambda t, y: torch.reciprocal(3.0 + y @ W),
    "constant_over_jet": lambda t, y: 1.0 / (2.0 + torch.tanh(y)),
    "int_power": lambda t, y: (y @ W) ** 3,
    "float_power": lambda t, y: (2.0 + y @ W * 0.3) ** 1.5,
    "sqrt": lambda t, y: torch.sqrt(1.0 + y * y),
    "rsqrt": lambda t, y: torch.rsqrt(1.0 + y * y),
    "square": lambda t, y: torch.square(y @ W),
    "neg": lambda t, y: -torch.tanh(y),
    "tensor_methods": lambda t, y: (y @ W).tanh().mul(2.0).sub(y.sigmoid()),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_recurrence_matches_nested_jvp(name):
    _check(ELEMENTWISE[name])


TIME_DEPENDENT = {
    "time_product": lambda t, y: torch.sin(t) * y + t * t,
    "time_concat": lambda t, y: torch.cat([y, t.reshape(1, 1).expand(y.shape[0], 1)], dim=-1)[..., :D].tanh()
    + torch.cos(3 * t),
    "time_exp": lambda t, y: torch.exp(-t) * torch.tanh(y),
    "time_division": lambda t, y: y / (1.0 + t),
}


@pytest.mark.parametrize("name", sorted(TIME_DEPENDENT))
def test_time_input_recurrences(name):
    _check(TIME_DEPENDENT[name])


class _Field(nn.Module):
    def __init__(self, net, with_time=False):
        super().__init__()
        self.net = net.double()
        self.with_time = with_time

    def forward(self, t, y):
        if self.with_time:
            y = torch.cat([y, t * torch.ones_like(y[..., :1])], dim=-1)
        return self.net(y)


LAYERS = {
    "linear_tanh": lambda: _Field(nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, D))),
    "mlp_mixed": lambda: _Field(nn.Sequential(
        nn.Linear(D + 1, 12), nn.Softplus(), nn.Linear(12, 12), nn.Sigmoid(), nn.Linear(12, 12),
        nn.ELU(), nn.Linear(12, 12), nn.SiLU(), nn.Linear(12, 12), nn.LeakyReLU(), nn.Linear(12, D)),
        with_time=True),
    "relu_identity_dropout_eval": lambda: _Field(nn.Sequential(
        nn.Linear(D, 16), nn.ReLU(), nn.Identity(), nn.Dropout(0.5).eval(), nn.Linear(16, D))),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_rules_match_nested_jvp(name):
    _check(LAYERS[name]())


def test_addmm_matmul_bmm_rules():
    b = torch.randn(D, dtype=torch.float64)
    _check(lambda t, y: torch.addmm(b, torch.tanh(y), W, beta=0.5, alpha=2.0))
    _check(lambda t, y: torch.bmm(y.unsqueeze(1), torch.tanh(y).unsqueeze(2)).squeeze(2) * y)
    _check(lambda t, y: torch.tanh(y) @ torch.sin(y).transpose(0, 1) @ y)  # Jet @ Jet


def test_structural_ops():
    def f(t, y):
        a, b = torch.chunk(torch.cat([y, y * y], dim=-1), 2, dim=-1)
        z = torch.stack([a, b], dim=0).sum(0).reshape(-1).view(y.shape[0], D)
        return torch.where(y > 0, z, -z).flip(-1).mean(-1, keepdim=True).expand_as(y) + y[:, [2, 0, 1]]

    _check(f)


def test_conv2d_rule():
    conv = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 3, padding=1)).double()
    y0 = torch.randn(2, 2, 5, 5, dtype=torch.float64) * 0.5
    _check(lambda t, y: conv(y), y0=y0)
    pooled = lambda t, y: F.avg_pool2d(F.pad(y, (1, 1, 1, 1)), 3, stride=1) - y
    _check(pooled, y0=y0)


def test_coefficient_definition_on_known_solution():
    # y' = y, y(0) = y0: y_k = y0 / k!
    y0 = torch.tensor([[1.5, -2.0]], dtype=torch.float64)
    coeffs = taylor_coefficients(lambda t, y: y, torch.tensor(0.0, dtype=torch.float64), y0, 5)
    factorial = 1.0
    for k, c in enumerate(coeffs):
        factorial *= max(k, 1)
        torch.testing.assert_close(c, y0 / factorial)


def test_gradients_flow_through_taylor_coefficients():
    field = LAYERS["linear_tanh"]()
    y0 = torch.randn(3, D, dtype=torch.float64, requires_grad=True)
    t0 = torch.tensor(0.0, dtype=torch.float64)
    got = taylor_coefficients(field, t0, y0, 3)[-1].sum()
    want = jvp_coefficients(field, t0, y0, 3)[-1].sum()
    g_got = torch.autograd.grad(got, [y0, *field.parameters()])
    g_want = torch.autograd.grad(want, [y0, *field.parameters()])
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_unsupported_layer_names_op_and_layer():
    field = _Field(nn.Sequential(nn.Linear(D, 8), nn.GELU(), nn.Linear(8, D)))
    y0 = torch.randn(2, D, dtype=torch.float64)
    with pytest.raises(TaylorModeUnsupported) as info:
        taylor_coefficients(field, torch.tensor(0.0, dtype=torch.float64), y0, 2)
    assert info.value.op == "gelu"
    assert "net.1 (GELU)" in str(info.value) and "jvp" in str(info.value)
    # the nested-jvp fallback handles it
    assert len(jvp_coefficients(field, torch.tensor(0.0, dtype=torch.float64), y0, 2)) == 3


def test_order_validation():
    f = lambda t, y: y
    t0, y0 = torch.tensor(0.0), torch.zeros(2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInput, match="order"):
            taylor_coefficients(f, t0, y0, bad)
        with pytest.raises(InvalidInput, match="order"):
            jvp_coefficients(f, t0, y0, bad)


def test_jet_basics():
    jet = Jet([torch.ones(2, 3), torch.zeros(2, 3)])
    assert jet.order == 1 and jet.shape == (2, 3) and jet.size(-1) == 3 and jet.dim() == 2
    assert torch.equal(torch.zeros_like(jet), torch.zeros(2, 3))
    assert "tanh" in supported_ops() and "linear" in supported_ops()
