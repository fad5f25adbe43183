"""Events (issue 14, item 7): torchdiffeq's ``odeint(..., event_fn=...)`` and ``odeint_event``
spellings, ``solve(..., events=[Event(...)])`` with terminal and non-terminal events, event times
differentiable by the implicit function theorem with every gradient backend."""

import math

import pytest
import torch
import torchdiffeq

import odegrad
from odegrad import Event
from odegrad.errors import InvalidInput, UnsupportedCombination

F64 = torch.float64
METHODS = [("dopri5", None), ("rk4", {"step_size": 0.01})]


def _decay(rate: torch.Tensor):
    return lambda t, y: -rate * y


def _half(t, y):
    return y - 0.5


@pytest.mark.parametrize("gradient", ["direct", "backsolve", "gq", "interp"])
@pytest.mark.parametrize(("method", "options"), METHODS)
def test_threshold_crossing_time_and_gradients_are_exact(gradient, method, options):
    """y' = −k y from y0 reaches 1/2 at t* = ln(2 y0) / k: dt*/dk = −t*/k, dt*/dy0 = 1/(k y0)."""
    k = torch.tensor(1.3, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.2], dtype=F64, requires_grad=True)
    event_t, ys = odegrad.odeint(_decay(k), y0, torch.tensor([0.0, 1.0], dtype=F64), event_fn=_half,
                                 method=method, options=options, gradient=gradient, params=[k])
    exact = math.log(2 * 1.2) / 1.3
    assert ys.shape == (2, 1)
    assert float(event_t) == pytest.approx(exact, abs=1e-7)
    assert float(ys[-1, 0]) == pytest.approx(0.5, abs=1e-7)
    assert torch.equal(ys[0], y0.detach())
    d_k, d_y0 = torch.autograd.grad(event_t, (k, y0))
    assert float(d_k) == pytest.approx(-exact / 1.3, rel=1e-5)
    assert float(d_y0) == pytest.approx(1 / (1.3 * 1.2), rel=1e-5)


def _fd(fn, x: float, eps: float = 1e-6) -> float:
    return (fn(x + eps) - fn(x - eps)) / (2 * eps)


def test_event_time_gradient_matches_finite_differences_for_a_nonlinear_field():
    """Van der Pol from (2, 0): the time x first crosses 1, differentiated in μ and x0."""
    def event_time(mu: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        def field(t, y):
            return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])
        event_t, _ = odegrad.odeint_event(field, torch.stack([x0, torch.zeros((), dtype=F64)]),
                                          torch.tensor(0.0, dtype=F64), event_fn=lambda t, y: y[0] - 1.0,
                                          rtol=1e-11, atol=1e-12)
        return event_t

    mu = torch.tensor(0.7, dtype=F64, requires_grad=True)
    x0 = torch.tensor(2.0, dtype=F64, requires_grad=True)
    d_mu, d_x0 = torch.autograd.grad(event_time(mu, x0), (mu, x0))
    with torch.no_grad():
        fd_mu = _fd(lambda v: float(event_time(torch.tensor(v, dtype=F64), x0)), 0.7)
        fd_x0 = _fd(lambda v: float(event_time(mu, torch.tensor(v, dtype=F64))), 2.0)
    assert float(d_mu) == pytest.approx(fd_mu, rel=1e-5)
    assert float(d_x0) == pytest.approx(fd_x0, rel=1e-5)


def _ball(gravity: float):
    return lambda t, state: (state[1], torch.full_like(state[1], -gravity))


def _bounces(height: torch.Tensor, restitution: torch.Tensor, bounces: int, gradient: str) -> torch.Tensor:
    """Time of the last of ``bounces`` impacts of a ball dropped from ``height`` (tuple state
    (position, velocity); each impact restarts from the event state with velocity −e·v)."""
    t0 = torch.tensor(0.0, dtype=F64)
    state = (height, torch.zeros((), dtype=F64))
    for _ in range(bounces):
        t0, (pos, vel) = odegrad.odeint_event(_ball(9.81), state, t0, event_fn=lambda t, s: s[0],
                                              gradient=gradient, method="dopri5", rtol=1e-10, atol=1e-12,
                                              params=[])
        state = (pos[-1], -restitution * vel[-1])
    return t0


@pytest.mark.parametrize("gradient", ["direct", "backsolve"])
def test_bouncing_ball_impact_times_and_gradients(gradient):
    """Impacts at T_n = t1 (1 + 2e + ... + 2e^(n−1)), t1 = sqrt(2h/g); gradients in h and e
    through three chained events (each event time is the next solve's t0)."""
    h = torch.tensor(1.5, dtype=F64, requires_grad=True)
    e = torch.tensor(0.8, dtype=F64, requires_grad=True)
    last = _bounces(h, e, 3, gradient)
    t1 = math.sqrt(2 * 1.5 / 9.81)
    assert float(last) == pytest.approx(t1 * (1 + 2 * 0.8 + 2 * 0.8 ** 2), rel=1e-7)
    d_h, d_e = torch.autograd.grad(last, (h, e))
    assert float(d_h) == pytest.approx(float(last) / (2 * 1.5), rel=1e-6)
    assert float(d_e) == pytest.approx(t1 * (2 + 4 * 0.8), rel=1e-6)


def test_non_terminal_events_are_recorded_and_differentiable_with_an_adjoint_backend():
    """y = sin(ωt) (state (y, y'/ω)) crosses zero at kπ/ω: dt_k/dω = −kπ/ω². A terminal event
    on t alone ends the solve at 7: ys keeps the output times before it, then the event state."""
    omega = torch.tensor(1.1, dtype=F64, requires_grad=True)

    def field(t, y):
        return torch.stack([omega * y[1], -omega * y[0]])

    t = torch.linspace(0, 10, 11, dtype=F64)
    sol = odegrad.solve(field, torch.tensor([0.0, 1.0], dtype=F64), t, gradient="gq", rtol=1e-10,
                        atol=1e-12, params=[omega],
                        events=[Event(lambda t, y: y[0], terminal=False), Event(lambda t, y: t - 7.0)])
    crossings = [k * math.pi / 1.1 for k in (1, 2)]
    assert sol.event_times[0].detach().tolist() == pytest.approx(crossings, abs=1e-8)
    assert float(sol.event_t) == pytest.approx(7.0, abs=1e-12)
    assert sol.ys.shape == (8, 2)  # the outputs 0..6 before the event, then the state at it
    assert float(sol.ys[-1, 0]) == pytest.approx(math.sin(7.7), abs=1e-8)
    grads = [torch.autograd.grad(x, omega, retain_graph=True)[0] for x in sol.event_times[0]]
    assert [float(g) for g in grads] == pytest.approx([-k * math.pi / 1.1 ** 2 for k in (1, 2)], rel=1e-6)


def test_non_terminal_events_keep_every_output_time():
    sol = odegrad.solve(lambda t, y: torch.ones_like(y), torch.zeros(1, dtype=F64),
                        torch.linspace(0, 3, 4, dtype=F64), method="rk4", options={"step_size": 0.2},
                        events=[Event(lambda t, y: torch.cos(math.pi * y), terminal=False)])
    assert sol.ys.shape == (4, 1) and sol.event_t is None
    assert sol.ys[:, 0].tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-12)
    assert sol.event_times[0].tolist() == pytest.approx([0.5, 1.5, 2.5], abs=1e-12)


def test_reverse_time_event_and_start_time_gradient():
    """y' = y backwards from y(t0) = 1 reaches 1/2 at t* = t0 − ln 2: dt*/dt0 = 1."""
    t0 = torch.tensor(0.5, dtype=F64, requires_grad=True)
    event_t, ys = odegrad.odeint_event(lambda t, y: y, torch.ones(1, dtype=F64), t0, event_fn=_half,
                                       reverse_time=True)
    assert float(event_t) == pytest.approx(0.5 - math.log(2), abs=1e-7)
    assert float(ys[-1, 0]) == pytest.approx(0.5, abs=1e-7)
    (d_t0,) = torch.autograd.grad(event_t, t0)
    assert float(d_t0) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("gradient", ["backsolve", "gq"])
def test_odeint_adjoint_passes_event_fn_on(gradient):
    k = torch.tensor(0.9, dtype=F64, requires_grad=True)
    event_t, ys = odegrad.odeint_adjoint(_decay(k), torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                                         event_fn=_half, adjoint_params=[k], gradient=gradient)
    assert float(event_t) == pytest.approx(math.log(2) / 0.9, abs=1e-7)
    (d_k,) = torch.autograd.grad(event_t, k)
    assert float(d_k) == pytest.approx(-math.log(2) / 0.9 ** 2, rel=1e-5)


@pytest.mark.parametrize(("method", "options"), [("dopri5", None), ("rk4", {"step_size": 0.05, "interp": "cubic"})])
def test_event_time_agrees_with_torchdiffeq(method, options):
    """The same event through torchdiffeq's odeint_event (its default rk4 interpolation is
    linear; odegrad's cubic, so torchdiffeq is given ``interp='cubic'`` too)."""
    def field(t, y):
        return torch.stack([y[1], -torch.sin(y[0])])

    y0, t0 = torch.tensor([0.0, 1.5], dtype=F64), torch.tensor(0.0, dtype=F64)
    theirs, their_ys = torchdiffeq.odeint_event(field, y0, t0, event_fn=lambda t, y: y[1] - 0.2,
                                                method=method, options=options, atol=1e-10, rtol=1e-10)
    ours, our_ys = odegrad.odeint_event(field, y0, t0, event_fn=lambda t, y: y[1] - 0.2, method=method,
                                        options=options, atol=1e-10, rtol=1e-10)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-7)
    assert torch.allclose(our_ys, their_ys, atol=1e-7)


def test_linear_interp_finds_the_root_of_the_linear_interpolant():
    """Fixed steps with ``interp="linear"``: the event is where the straight line between the two
    grid values that bracket it crosses the threshold."""
    grid = odegrad.odeint(_decay(torch.tensor(2.0)), torch.ones(1, dtype=F64),
                          torch.linspace(0, 1, 11, dtype=F64), method="rk4")[:, 0].tolist()
    event_t, _ = odegrad.odeint(_decay(torch.tensor(2.0)), torch.ones(1, dtype=F64), torch.tensor([0.0], dtype=F64),
                                event_fn=_half, method="rk4", options={"step_size": 0.1, "interp": "linear"})
    i = next(i for i, v in enumerate(grid) if v < 0.5) - 1
    expected = 0.1 * i + 0.1 * (grid[i] - 0.5) / (grid[i] - grid[i + 1])
    assert float(event_t) == pytest.approx(expected, abs=1e-12)


def test_linear_interp_option_interpolates_output_times_linearly():
    field, y0 = _decay(torch.tensor(2.0)), torch.ones(1, dtype=F64)
    ys = odegrad.odeint(field, y0, torch.tensor([0.0, 0.25, 0.5], dtype=F64), method="euler",
                        options={"step_size": 0.5, "interp": "linear"})
    assert float(ys[1, 0]) == pytest.approx((1.0 + float(ys[2, 0])) / 2, abs=1e-15)
    with pytest.raises(UnsupportedCombination, match="interp"):
        odegrad.odeint(field, y0, torch.tensor([0.0, 1.0]), options={"interp": "linear"})
    with pytest.raises(InvalidInput, match=r"options\['interp'\]"):
        odegrad.odeint(field, y0, torch.tensor([0.0, 1.0]), method="rk4", options={"interp": "quadratic"})


@pytest.mark.parametrize(("call", "match"), [
    (lambda: Event(3), "Event fn"),
    (lambda: Event(_half, terminal="yes"), "Event terminal"),
    (lambda: odegrad.solve(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), events=_half), "events"),
    (lambda: odegrad.odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0, 2.0]), event_fn=_half), "t"),
    (lambda: odegrad.odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), event_fn=lambda t, y: 1.0),
     "event_fn output"),
    (lambda: odegrad.odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), event_fn=_half,
                            method="rk4"), r"options\['step_size'\]"),
    (lambda: odegrad.solve(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, math.inf])), "t"),
])
def test_bad_event_inputs_are_named(call, match):
    with pytest.raises(InvalidInput, match=match):
        call()


def test_events_need_dense_output():
    with pytest.raises(UnsupportedCombination, match="dense output"):
        odegrad.odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]), event_fn=_half,
                       method="torchdiffeq:dopri5")


def test_float32_state_with_float64_time_keeps_float32():
    """A func promoted to float64 by a float64 t (a 0-dim state) is cast back, as in any solve."""
    k = torch.tensor(1.3, requires_grad=True)
    event_t, ys = odegrad.odeint_event(lambda t, y: -k * y * torch.cos(0 * t), torch.tensor(1.0),
                                       torch.tensor(0.0, dtype=F64), event_fn=_half)
    assert ys.dtype == torch.float32 and event_t.dtype == F64
    assert float(event_t) == pytest.approx(math.log(2) / 1.3, abs=1e-5)
    (d_k,) = torch.autograd.grad(event_t, k)
    assert float(d_k) == pytest.approx(-math.log(2) / 1.3 ** 2, rel=1e-4)
