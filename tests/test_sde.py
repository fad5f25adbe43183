"""odegrad.sde: neural SDEs trained as Wong–Zakai ODEs, sampled with torchsde."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchsde
from torch import nn

import odegrad
from odegrad.errors import InvalidInput, NonFiniteValue, UnknownName, UnsupportedCombination
from odegrad.sde import NeuralSDE, TorchsdeSDE

from .support import D, relative_error, tanh_mlp


class Linear(nn.Module):
    """``c · x`` with a learnable scalar c (float64)."""

    def __init__(self, c: float):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c, dtype=D))

    def forward(self, t, x):
        return self.c * x


A, B = -0.3, 0.8  # dx = A x dt + B x ∘ dW  has  x_t = x_0 exp(A t + B W_t)


def linear_sde(path_steps: int = 8) -> NeuralSDE:
    return NeuralSDE(Linear(A), Linear(B), path_steps=path_steps)


def brownian(size, t1: float = 1.0, entropy: int = 123) -> torchsde.BrownianInterval:
    return torchsde.BrownianInterval(t0=0.0, t1=t1, size=size, dtype=D, entropy=entropy)


def brownian_at(bm, t: torch.Tensor, size) -> torch.Tensor:
    """W(t_i) − W(t_0) for every t_i: ``[len(t), *size]``."""
    return torch.stack([bm(float(t[0]), float(s)) if s > t[0] else torch.zeros(size, dtype=D) for s in t])


def test_exported_as_odegrad_sde():
    assert odegrad.sde.NeuralSDE is NeuralSDE


@pytest.mark.parametrize("method, options, tol", [("dopri5", None, 1e-6), ("rk4", {"step_size": 0.01}, 1e-5),
                                                  ("tsit5", None, 1e-6)])
def test_solves_the_wong_zakai_ode_exactly_between_kinks(method, options, tol):
    """Along the piecewise-linear path W̃ the linear ODE has the solution x_0 exp(A (t − t_0) + B W̃(t)):
    the solves never straddle a kink nor evaluate the field there with the wrong slope."""
    model = linear_sde(path_steps=7)
    x0 = torch.ones(16, 1, dtype=D)
    t = torch.linspace(0.2, 1.5, 9, dtype=D)
    kinks = model.path_times(t)
    increments = model.brownian_increments(kinks, x0, torch.Generator().manual_seed(5))
    with torch.no_grad():
        ys = model(x0, t, method=method, options=options, gradient="direct", rtol=1e-9, atol=1e-11,
                   generator=torch.Generator().manual_seed(5))
    piece = (torch.searchsorted(kinks, t, right=True) - 1).clamp(max=len(kinks) - 2)
    at_kinks = torch.cat([torch.zeros_like(increments[:1]), increments.cumsum(0)])
    slopes = increments / (kinks[1:] - kinks[:-1]).view(-1, 1, 1)
    path = at_kinks[piece] + slopes[piece] * (t - kinks[piece]).view(-1, 1, 1)
    assert ys.shape == (len(t), 16, 1)
    assert relative_error(ys, x0 * torch.exp(A * (t - t[0]).view(-1, 1, 1) + B * path)) < tol


def test_strong_error_decreases_with_path_steps():
    """The Wong–Zakai ODE converges to the Stratonovich solution x_0 exp(A t + B W(t)) of the
    same Brownian path, strongly with order 1/2 in the path's mesh (measured: 0.545); it does
    not converge to the Itô solution x_0 exp((A − B²/2) t + B W(t))."""
    size = (128, 1)
    bm = brownian(size)
    x0 = torch.ones(size, dtype=D)
    t = torch.linspace(0, 1, 41, dtype=D)
    brownian_t = brownian_at(bm, t, size)
    stratonovich = x0 * torch.exp(A * t.view(-1, 1, 1) + B * brownian_t)
    ito = x0 * torch.exp((A - B ** 2 / 2) * t.view(-1, 1, 1) + B * brownian_t)
    path_steps = [2, 4, 8, 16, 32]
    errors, ito_errors = [], []
    for steps in path_steps:
        with torch.no_grad():
            ys = linear_sde(steps)(x0, t, bm=bm, gradient="direct", rtol=1e-8, atol=1e-10)
        errors.append(float((ys - stratonovich).abs().mean()))
        ito_errors.append(float((ys - ito).abs().mean()))
    order = -np.polyfit(np.log(path_steps), np.log(errors), 1)[0]
    print(f"Wong–Zakai strong errors {errors}, measured order {order:.3f}")
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert order > 0.3
    assert ito_errors[-1] > 3 * errors[-1]


def sde_mlp(path_steps: int = 5) -> NeuralSDE:
    return NeuralSDE(tanh_mlp(dim=2, time=True, seed=0), tanh_mlp(dim=2, time=True, seed=1), path_steps=path_steps)


def test_gradients_agree_between_backends():
    """Same Brownian path, float64: direct, backsolve, gq and interp give the same dL/dθ, dL/dx0
    (output times fall inside path pieces, so pieces are split at observations too)."""
    model = sde_mlp()
    t = torch.tensor([0.0, 0.3, 0.75, 1.2], dtype=D)
    weights = torch.randn(len(t), 3, 2, dtype=D)
    results = {}
    for gradient in ("direct", "backsolve", "gq", "interp"):
        model.zero_grad()
        x0 = torch.randn(3, 2, dtype=D, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        ys = model(x0, t, gradient=gradient, rtol=1e-10, atol=1e-12, generator=torch.Generator().manual_seed(2))
        (weights * ys).sum().backward()
        results[gradient] = torch.cat([x0.grad.flatten(), *(p.grad.flatten() for p in model.parameters())])
    for gradient in ("backsolve", "gq", "interp"):
        assert relative_error(results[gradient], results["direct"]) < 1e-6, gradient


def test_generator_seeds_the_path():
    model = sde_mlp()
    x0 = torch.zeros(4, 2, dtype=D)
    t = torch.linspace(0, 1, 3, dtype=D)
    with torch.no_grad():
        first, again, other = (model(x0, t, gradient="direct", generator=torch.Generator().manual_seed(seed))
                               for seed in (0, 0, 1))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert torch.equal(model(x0, t[:1]), x0[None])


@pytest.mark.parametrize("method", ["midpoint", "milstein", "reversible_heun"])
def test_sample_is_torchsde_on_the_trained_coefficients(method):
    model = sde_mlp()
    x0 = torch.randn(3, 2, dtype=D)
    t = torch.linspace(0, 1, 5, dtype=D)
    bm = brownian((2 * 3, 2))
    with torch.no_grad():
        ys = model.sample(x0, t, n=2, method=method, dt=0.05, bm=bm)
        direct = torchsde.sdeint(model.to_torchsde(), x0.repeat(2, 1), t, bm=bm, method=method, dt=0.05)
    assert ys.shape == (len(t), 2, 3, 2)
    assert torch.equal(ys, direct.view(len(t), 2, 3, 2))
    assert torch.equal(ys[0], x0.expand(2, 3, 2))


def test_to_torchsde_is_a_stratonovich_diagonal_sde():
    model = sde_mlp()
    sde = model.to_torchsde()
    x = torch.randn(4, 2, dtype=D)
    tt = torch.tensor(0.5, dtype=D)
    assert isinstance(sde, TorchsdeSDE)
    assert (sde.sde_type, sde.noise_type) == ("stratonovich", "diagonal")
    assert torch.equal(sde.f(tt, x), model.drift(tt, x))
    assert torch.equal(sde.g(tt, x), model.diffusion(tt, x))
    assert {id(p) for p in sde.parameters()} == {id(p) for p in model.parameters()}


def test_sample_solves_the_stratonovich_sde():
    """torchsde on the same coefficients converges to the Stratonovich solution the ODE training targets."""
    size = (64, 1)
    bm = brownian(size, entropy=7)
    x0 = torch.ones(size, dtype=D)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=D)
    exact = x0 * torch.exp(A * t.view(-1, 1, 1) + B * brownian_at(bm, t, size))
    with torch.no_grad():
        ys = linear_sde().sample(x0, t, method="midpoint", dt=1e-3, bm=bm)[:, 0]
    assert relative_error(ys, exact) < 1e-3


def test_generator_seeds_sample():
    model = sde_mlp()
    x0 = torch.zeros(2, 2, dtype=D)
    t = torch.linspace(0, 1, 3, dtype=D)
    with torch.no_grad():
        first, again = (model.sample(x0, t, n=2, generator=torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(first, again)


class OUDrift(nn.Module):
    """θ (μ − x) with θ = exp(log θ)."""

    def __init__(self):
        super().__init__()
        self.log_theta = nn.Parameter(torch.tensor(0.0))
        self.mu = nn.Parameter(torch.tensor(0.0))

    def forward(self, t, x):
        return self.log_theta.exp() * (self.mu - x)


class ConstantDiffusion(nn.Module):
    def __init__(self):
        super().__init__()
        self.log_sigma = nn.Parameter(torch.tensor(0.0))

    def forward(self, t, x):
        return self.log_sigma.exp().expand_as(x)


@pytest.fixture
def one_thread():
    """One intra-op thread while the test runs (small tensors: more threads only contend on a busy
    machine); the example sets it too, and this puts the previous count back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_trained_ou_model_recovers_theta_mu_sigma(one_thread):
    """Fit dx = θ(μ − x) dt + σ dW (θ=1.5, μ=0.5, σ=0.4, simulated with torchsde) by matching the
    mean and standard deviation of the paths from two initial states, gq gradients, midpoint steps.
    Recovers θ and σ within 10 % and μ within 0.05 (measured: θ 1.512, μ 0.498, σ 0.419)."""
    theta, mu, sigma = 1.5, 0.5, 0.4
    true = NeuralSDE(OUDrift(), ConstantDiffusion())
    with torch.no_grad():
        true.drift.log_theta.fill_(math.log(theta))
        true.drift.mu.fill_(mu)
        true.diffusion.log_sigma.fill_(math.log(sigma))
    starts = torch.tensor([-1.0, 2.0])
    t = torch.linspace(0, 2, 11)
    with torch.no_grad():
        data = true.sample(starts.view(-1, 1), t, n=2000, dt=0.01, generator=torch.Generator().manual_seed(0))
    data_mean, data_std = data.mean(1), data.std(1)
    model = NeuralSDE(OUDrift(), ConstantDiffusion(), path_steps=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.98)
    generator = torch.Generator().manual_seed(1)
    x0 = starts.view(-1, 1).repeat(256, 1)
    for _ in range(120):
        ys = model(x0, t, gradient="gq", method="midpoint", generator=generator).view(len(t), 256, 2, 1)
        loss = ((ys.mean(1) - data_mean) ** 2).mean() + ((ys.std(1) - data_std) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        found = (float(model.drift.log_theta.exp()), float(model.drift.mu), float(model.diffusion.log_sigma.exp()))
    print(f"recovered theta, mu, sigma = {found}")
    assert abs(found[0] - theta) < 0.1 * theta
    assert abs(found[1] - mu) < 0.05
    assert abs(found[2] - sigma) < 0.1 * sigma


class WrongShape(nn.Module):
    def forward(self, t, x):
        return x[:, :1]


@pytest.mark.parametrize("build, error", [
    (lambda: NeuralSDE(Linear(A), Linear(B), noise="general"), UnsupportedCombination),
    (lambda: NeuralSDE(Linear(A), Linear(B), noise="diagnal"), UnknownName),
    (lambda: NeuralSDE(Linear(A), Linear(B), path_steps=0), InvalidInput),
    (lambda: NeuralSDE(Linear(A), Linear(B), path_steps=2.5), InvalidInput),
    (lambda: NeuralSDE(lambda t, x: x, Linear(B)), InvalidInput),
])
def test_construction_errors(build, error):
    with pytest.raises(error):
        build()


X0 = torch.ones(3, 2, dtype=D)
T = torch.linspace(0, 1, 4, dtype=D)


@pytest.mark.parametrize("call, error, argument", [
    (lambda m: m(X0, torch.tensor([0.0, 0.5, 0.4], dtype=D)), InvalidInput, "t"),
    (lambda m: m(X0, torch.tensor([0.0, 0.5, 0.5], dtype=D)), InvalidInput, "t"),
    (lambda m: m(X0, torch.tensor([1.0, 0.5], dtype=D)), InvalidInput, "t"),
    (lambda m: m(X0, torch.tensor([0.0, float("nan")], dtype=D)), InvalidInput, "t"),
    (lambda m: m(X0, "ab"), InvalidInput, "t"),
    (lambda m: m(X0.tolist(), T), InvalidInput, "x0"),
    (lambda m: m(X0[0], T), InvalidInput, "x0 shape"),
    (lambda m: m(X0.long(), T), InvalidInput, "x0 dtype"),
    (lambda m: m(torch.tensor([[0.0, float("nan")]], dtype=D), T), NonFiniteValue, None),
    (lambda m: m(X0, T, options={"grid": [0.0, 1.0]}), UnsupportedCombination, None),
    (lambda m: m(X0, T, bm=brownian((2, 2))), InvalidInput, "bm increment shape"),
    (lambda m: m.sample(X0, torch.tensor([0.0, 0.5, 0.2], dtype=D)), InvalidInput, "t"),
    (lambda m: m.sample(X0, T, n=0), InvalidInput, "n"),
    (lambda m: m.sample(X0, T, method="euler"), UnknownName, "method"),
    (lambda m: m.sample(X0, T, dt=-0.1), InvalidInput, "dt"),
])
def test_bad_input(call, error, argument):
    with pytest.raises(error) as info:
        call(sde_mlp())
    if argument is not None:
        assert info.value.argument == argument


@pytest.mark.parametrize("drift, diffusion, argument", [
    (WrongShape(), tanh_mlp(dim=2), "drift output shape"),
    (tanh_mlp(dim=2), WrongShape(), "diffusion output shape"),
])
def test_coefficient_shape_mismatch(drift, diffusion, argument):
    model = NeuralSDE(drift, diffusion)
    with pytest.raises(InvalidInput) as info:
        model(X0, T)
    assert info.value.argument == argument
    with pytest.raises(InvalidInput) as info:
        model.sample(X0, T)
    assert info.value.argument == argument


def test_example_runs_quick(tmp_path, capsys, monkeypatch, one_thread):
    examples = Path(__file__).resolve().parents[1] / "examples"
    monkeypatch.syspath_prepend(str(examples))  # the example imports examples/_harness.py
    spec = importlib.util.spec_from_file_location("sde_ou_gbm", examples / "sde_ou_gbm.py")
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, example)
    spec.loader.exec_module(example)
    assert example.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for row in ("| gq |", "| interp |", "| backsolve |", "| torchsde sdeint_adjoint |", "marginal variance"):
        assert row in printed
    assert (tmp_path / "sde_ou_gbm.png").stat().st_size > 0
