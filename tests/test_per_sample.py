"""Per-sample solving (``options={"per_sample": True}`` or a 2-D ``t``): each batch entry its own
steps and output times, the same answer whatever batch it is in, with every gradient backend."""

from __future__ import annotations

import pytest
import torch

import odegrad
from odegrad.errors import (
    InvalidInput,
    MaxStepsExceeded,
    NonFiniteValue,
    ReverseSolveDrift,
    UnsupportedCombination,
)

BACKENDS = ("direct", "backsolve", "gq", "interp")
TOL = {"rtol": 1e-10, "atol": 1e-12}


class LinearPerEntry(torch.nn.Module):
    """y_b' = (A + diag(d_b)) y_b: a shared trainable A and a fixed shift per entry, so entries
    have different dynamics (and step counts) and the exact solution is a matrix exponential."""

    def __init__(self, shifts: torch.Tensor, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.A = torch.nn.Parameter(0.4 * torch.randn(3, 3, generator=generator, dtype=torch.float64))
        self.shifts = shifts

    def matrices(self) -> torch.Tensor:
        return self.A + torch.diag_embed(self.shifts[:, None].expand(-1, 3))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert t.shape == (y.shape[0],), "per-sample func receives one time per entry"
        return torch.einsum("bij,bj->bi", self.matrices(), y)

    def exact(self, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``Tensor[B, n, 3]``: expm(M_b (t_bi − t_b0)) y0_b."""
        spans = (t - t[:, :1])[:, :, None, None]
        return torch.einsum("bnij,bj->bni", torch.linalg.matrix_exp(self.matrices()[:, None] * spans), y0)


def _times(batch: int, count: int, seed: int = 1) -> torch.Tensor:
    """Rows with their own start, end and spacing; row 1 runs backwards in time."""
    generator = torch.Generator().manual_seed(seed)
    steps = 0.05 + torch.rand(batch, count - 1, generator=generator, dtype=torch.float64) * 0.4
    t = torch.cat([torch.rand(batch, 1, generator=generator, dtype=torch.float64), steps], dim=1).cumsum(dim=1)
    t[1] = -t[1]
    return t


def _loss(ys: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(0.5, 1.5, ys.numel(), dtype=ys.dtype).reshape(ys.shape)
    return (weights * ys).sum() + ys.pow(2).sum()


def _gradients(func: LinearPerEntry, y0: torch.Tensor, t: torch.Tensor, gradient: str, **tolerances):
    y0 = y0.detach().clone().requires_grad_(True)
    t = t.detach().clone().requires_grad_(True)
    ys = odegrad.odeint(func, y0, t, gradient=gradient, **(tolerances or TOL))
    return ys.detach(), torch.autograd.grad(_loss(ys), (y0, t, func.A))


@pytest.fixture
def problem():
    shifts = torch.tensor([-0.3, 0.0, 0.8, -1.5], dtype=torch.float64)
    func = LinearPerEntry(shifts)
    y0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return func, y0, _times(4, 5)


@pytest.mark.parametrize("gradient", BACKENDS)
def test_values_and_gradients_match_the_matrix_exponential(problem, gradient):
    func, y0, t = problem
    ys, grads = _gradients(func, y0, t, gradient)
    y0e, te = y0.clone().requires_grad_(True), t.clone().requires_grad_(True)
    exact = func.exact(y0e, te)
    exact_grads = torch.autograd.grad(_loss(exact), (y0e, te, func.A))
    assert ys.shape == (4, 5, 3)
    torch.testing.assert_close(ys, exact.detach(), rtol=1e-8, atol=1e-9)
    for name, grad, expected in zip(("y0", "t", "A"), grads, exact_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-7, atol=1e-8, msg=f"{gradient}: dL/d{name}")


@pytest.mark.parametrize("gradient", BACKENDS)
def test_an_entry_gets_the_same_answer_alone_and_in_any_batch(problem, gradient):
    func, y0, t = problem
    full_ys, _ = _gradients(func, y0, t, gradient)
    for entry in (0, 3):  # a contracting and the stiffest entry
        others = [b for b in range(4) if b != entry]
        for order in ([entry], [entry, *others], [*others[::-1], entry]):
            position = order.index(entry)
            sub = LinearPerEntry(func.shifts[order])
            sub.A = func.A
            y0_sub = y0[order].clone().requires_grad_(True)
            t_sub = t[order].clone().requires_grad_(True)
            ys = odegrad.odeint(sub, y0_sub, t_sub, gradient=gradient, **TOL)
            torch.testing.assert_close(ys[position], full_ys[entry], rtol=1e-12, atol=1e-12)
            # the loss of this entry only: its gradients must not see the batch
            g_y0, g_t, g_a = torch.autograd.grad(_loss(ys[position]), (y0_sub, t_sub, func.A))
            alone = LinearPerEntry(func.shifts[[entry]])
            alone.A = func.A
            y0_one, t_one = y0[[entry]].clone().requires_grad_(True), t[[entry]].clone().requires_grad_(True)
            one = odegrad.odeint(alone, y0_one, t_one, gradient=gradient, **TOL)
            r_y0, r_t, r_a = torch.autograd.grad(_loss(one[0]), (y0_one, t_one, func.A))
            torch.testing.assert_close(g_y0[position], r_y0[0], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g_t[position], r_t[0], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g_a, r_a, rtol=1e-12, atol=1e-12)
            assert not g_y0[[b for b in range(len(order)) if b != position]].any()


def test_each_entry_takes_its_own_steps():
    shifts = torch.tensor([0.0, -30.0], dtype=torch.float64)
    func = LinearPerEntry(shifts)
    y0 = torch.ones(2, 3, dtype=torch.float64)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    per_sample = odegrad.solve(func, y0, t, options={"per_sample": True}, rtol=1e-6, atol=1e-8)
    easy_alone = odegrad.solve(LinearPerEntry(shifts[:1]), y0[:1], t, options={"per_sample": True},
                               rtol=1e-6, atol=1e-8)
    accepted = per_sample.stats.steps_accepted
    assert accepted.shape == (2,) and accepted.dtype == torch.int64
    assert per_sample.stats.steps_rejected.shape == (2,)
    assert int(accepted[0]) == int(easy_alone.stats.steps_accepted[0])
    assert int(accepted[1]) > 2 * int(accepted[0])  # the stiff entry needs far more steps
    assert per_sample.ys.shape == (5, 2, 3)  # a shared 1-D t keeps the usual [n, B, ...] layout
    shared_t = odegrad.odeint(func, y0, t, options={"per_sample": True}, rtol=1e-6, atol=1e-8)
    rows = odegrad.odeint(func, y0, t.expand(2, -1), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(shared_t, rows.transpose(0, 1), rtol=0, atol=0)


def test_tuple_states_are_split_per_entry():
    scale = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def func(t, state):
        x, v = state
        return v, -x * scale[:, None, None] ** 2 + 0.0 * t[:, None, None]

    x0 = torch.ones(3, 2, 2, dtype=torch.float64)
    v0 = torch.zeros(3, 2, 2, dtype=torch.float64)
    t = torch.stack([torch.linspace(0, 1, 4), torch.linspace(0, 2, 4), torch.linspace(0.5, 1.0, 4)]).double()
    x, v = odegrad.odeint(func, (x0, v0), t, **TOL)
    assert x.shape == v.shape == (3, 4, 2, 2)
    spans = (t - t[:, :1])[:, :, None, None]
    torch.testing.assert_close(x, torch.cos(scale[:, None, None, None] * spans).expand(-1, -1, 2, 2),
                               rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("gradient", BACKENDS)
def test_float32_per_sample_gradients_agree_with_direct(gradient):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    y0 = torch.randn(6, 2)
    t = torch.sort(torch.rand(6, 7) * 3, dim=1).values
    result = {}
    for name in ("direct", gradient):
        ys = odegrad.odeint(lambda tt, y: net(y), y0, t, gradient=name, rtol=1e-6, atol=1e-7,
                            params=list(net.parameters()))
        result[name] = torch.autograd.grad(ys.pow(2).sum(), list(net.parameters()))
    for grad, reference in zip(result[gradient], result["direct"]):
        torch.testing.assert_close(grad, reference, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("gradient", BACKENDS)
def test_per_sample_compiles_to_one_graph_with_the_eager_answer(no_recompiles, gradient):
    """direct backpropagates through the traced loop; the adjoints run their per-sample sweep
    traced too: backsolve and gq with the same nodes and sums as eagerly (gradients to 1e-10),
    interp with a fixed node count per segment where the eager one chooses its own (two
    interpolants that each pass the held-out check at 10x the solve's rtol 1e-8: 1e-6)."""
    func = LinearPerEntry(torch.tensor([-0.3, 0.2], dtype=torch.float64))
    y0 = torch.ones(2, 3, dtype=torch.float64)
    t = _times(2, 4)

    def loss(y0):
        return odegrad.odeint(func, y0, t, rtol=1e-8, atol=1e-10, gradient=gradient).pow(2).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    y0c, y0e = y0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
    value, eager = compiled(y0c), loss(y0e)
    torch.testing.assert_close(value, eager, rtol=1e-12, atol=1e-12)
    rtol = 1e-6 if gradient == "interp" else 1e-10
    for got, want in zip(torch.autograd.grad(value, (y0c, func.A)), torch.autograd.grad(eager, (y0e, func.A))):
        torch.testing.assert_close(got, want, rtol=rtol, atol=1e-12)
    compiled(y0c * 1.5)  # the same shapes: no recompilation (an error under no_recompiles)


def test_failures_name_the_batch_entry():
    func = LinearPerEntry(torch.tensor([0.0, -2000.0], dtype=torch.float64))
    y0 = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(MaxStepsExceeded, match="batch entry 1"):
        odegrad.odeint(func, y0, torch.linspace(0, 1, 3, dtype=torch.float64).expand(2, -1),
                       options={"max_steps": 50})

    def blows_up(t, y):
        return torch.where(t[:, None] > 0.5, torch.full_like(y, float("nan")), -y)

    with pytest.raises(NonFiniteValue):
        odegrad.odeint(blows_up, y0, torch.linspace(0, 1, 3, dtype=torch.float64).expand(2, -1))


@pytest.mark.parametrize("driver", ["eager", "traced"])
def test_backsolve_refuses_a_reverse_solve_that_drifts(driver):
    func = LinearPerEntry(torch.tensor([0.0, -40.0], dtype=torch.float64))
    with torch.no_grad():
        func.A.zero_()
    y0 = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    ys = odegrad.odeint(func, y0, torch.linspace(0, 3, 4, dtype=torch.float64).expand(2, -1),
                        gradient="backsolve", rtol=1e-6, atol=1e-8, options={"driver": driver})
    with pytest.raises(ReverseSolveDrift, match="batch entry 1"):
        ys.sum().backward()


def _func(t, y):
    return -y


@pytest.mark.parametrize(("t", "match"), [
    (torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 1.0]]), r"t\[1\]"),
    (torch.tensor([[0.0, 1.0, 2.0], [0.0, 2.0, 1.0]]), r"t\[1\]"),
    (torch.tensor([[0.0, 1.0, float("nan")], [0.0, 1.0, 2.0]]), r"t\[0\]"),
    (torch.zeros(3, 3).cumsum(0), "t shape"),
])
def test_bad_per_sample_times_are_refused_by_row(t, match):
    with pytest.raises(InvalidInput, match=match):
        odegrad.odeint(_func, torch.ones(2, 3), t)


@pytest.mark.parametrize("method", ["rk4", "taylor", "kvaerno5", "torchdiffeq:dopri5"])
def test_methods_without_per_sample_solving_are_refused(method):
    with pytest.raises(UnsupportedCombination, match="per_sample"):
        odegrad.odeint(_func, torch.ones(2, 3), torch.linspace(0, 1, 3), method=method,
                       options={"per_sample": True})


@pytest.mark.parametrize("extra", [{"dense": True}, {"events": [odegrad.Event(lambda t, y: y[..., 0] - 0.5)]},
                                   {"regularization": odegrad.regularization.Kinetic()}])
def test_features_without_per_sample_solving_are_refused(extra):
    with pytest.raises(UnsupportedCombination, match="per_sample"):
        odegrad.solve(_func, torch.ones(2, 3), torch.linspace(0, 1, 3).expand(2, -1), **extra)


def test_per_sample_option_is_checked():
    with pytest.raises(InvalidInput, match="per_sample"):
        odegrad.odeint(_func, torch.ones(2, 3), torch.linspace(0, 1, 3), options={"per_sample": 1})
    with pytest.raises(InvalidInput, match="t shape"):
        odegrad.odeint(_func, torch.ones(2, 3), torch.linspace(0, 1, 3).expand(2, -1),
                       options={"per_sample": False})
    with pytest.raises(InvalidInput, match="y0 shape"):
        odegrad.odeint(_func, torch.tensor(1.0), torch.linspace(0, 1, 3), options={"per_sample": True})
    with pytest.raises(InvalidInput, match=r"y0\[1\] shape"):
        odegrad.odeint(lambda t, s: s, (torch.ones(2, 3), torch.ones(3)), torch.linspace(0, 1, 3).expand(2, -1))


def test_interp_fits_chebyshev_nodes_per_entry_and_refuses_by_entry():
    from odegrad.gradients import Interpolation

    func = LinearPerEntry(torch.tensor([0.0, 0.0], dtype=torch.float64))
    with torch.no_grad():
        func.A.copy_(torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -0.1]], dtype=torch.float64))
    y0 = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.stack([torch.linspace(0, 0.5, 3), torch.linspace(0, 12, 3)]).double()  # entry 1: 2 turns a segment
    coarse = Interpolation(min_nodes=4, max_nodes=4)
    with pytest.raises(odegrad.errors.InterpolationError, match="batch entry 1"):  # fitted in the forward pass
        odegrad.odeint(func, y0, t, gradient=coarse, rtol=1e-8, atol=1e-10)
    with pytest.raises(odegrad.errors.InterpolationError, match="of batch entry 1 misses"):  # traced: a fixed count
        odegrad.odeint(func, y0, t, gradient=Interpolation(nodes=4), rtol=1e-8, atol=1e-10,
                       options={"driver": "traced"})
    ys = odegrad.odeint(func, y0, t, gradient=Interpolation(max_nodes=64), rtol=1e-8, atol=1e-10)
    (grad,) = torch.autograd.grad(ys.sum(), y0)
    exact_y0 = y0.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(func.exact(exact_y0, t).sum(), exact_y0)
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("gradient", BACKENDS)
def test_many_outputs_per_step_get_exact_gradients(gradient):
    """Dense rows: most steps pass several output times of an entry, the last step its final ones
    (the eager loop reads outputs in a window per step; each is written, and differentiated, once)."""
    func = LinearPerEntry(torch.tensor([-0.2, 0.1, -0.5], dtype=torch.float64))
    y0 = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    t = torch.stack([torch.linspace(0, 2, 29), torch.linspace(0.5, 1.5, 29), torch.linspace(1, 0, 29)]).double()
    ys, grads = _gradients(func, y0, t, gradient, rtol=1e-9, atol=1e-11)
    y0e, te = y0.clone().requires_grad_(True), t.clone().requires_grad_(True)
    exact = func.exact(y0e, te)
    for name, grad, expected in zip(("y0", "t", "A"), grads, torch.autograd.grad(_loss(exact), (y0e, te, func.A))):
        torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-7, msg=f"{gradient}: dL/d{name}")


def test_complex_states_custom_norms_and_stops_per_sample():
    rates = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    t = torch.linspace(0, 1, 4, dtype=torch.float64).expand(3, -1)
    expected = torch.exp(-rates[:, None, None] * t[:, :, None])
    rotating = odegrad.odeint(lambda tt, y: 1j * rates[:, None] * y, torch.ones(3, 2, dtype=torch.complex128), t,
                              **TOL)
    assert rotating.shape == (3, 4, 2) and rotating.dtype == torch.complex128
    torch.testing.assert_close(rotating, torch.exp(1j * rates[:, None, None] * t[:, :, None]).expand(-1, -1, 2),
                               rtol=1e-8, atol=1e-9)

    def decay(tt, y):
        return -rates[:, None] * y

    y0 = torch.ones(3, 2, dtype=torch.float64)
    for options in ({"norm": lambda x: x.abs().max()}, {"step_t": [0.5], "first_step": 0.01}):
        ys = odegrad.odeint(decay, y0, t, rtol=1e-9, atol=1e-11, options=options)
        torch.testing.assert_close(ys, expected.expand(-1, -1, 2), rtol=1e-7, atol=1e-8)
    with pytest.raises(UnsupportedCombination, match="per-sample.*jump_t"):
        odegrad.odeint(decay, y0, t, options={"jump_t": [0.5]})


def test_float32_gradients_stay_finite_next_to_far_output_times():
    """An entry that reaches no output in a step is not read at its far next output (its dense
    output would overflow float32 there, and 0 · inf in the backward pass is NaN)."""
    def forced(t, y):
        return -y + torch.cos(t)[:, None]

    for other in (5e-11, 1.0):
        y0 = torch.ones(2, 2, requires_grad=True)
        t = torch.tensor([[0.0, 1e3], [0.0, other]])
        ys = odegrad.odeint(forced, y0, t, rtol=1e-5, atol=1e-6, options={"first_step": 1e-10})
        (grad,) = torch.autograd.grad(ys[:, -1].sum(), y0)
        assert torch.isfinite(grad).all(), other


def test_backward_methods_and_norms_per_sample_are_checked_before_solving():
    from odegrad.gradients import Backsolve, Interpolation

    y0, t = torch.ones(2, 2, requires_grad=True), torch.linspace(0, 1, 3).expand(2, -1)
    for backend in (Backsolve(method="rk4"), Interpolation(method="kvaerno5")):
        with pytest.raises(UnsupportedCombination, match=r"\(method=.*per-sample"):
            odegrad.odeint(_func, y0, t, gradient=backend)
    with pytest.raises(InvalidInput, match=r"options\['norm'\]"):
        odegrad.odeint(_func, y0, t, options={"norm": lambda x: float(x.abs().max())})
