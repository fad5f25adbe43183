"""The integration loop driven by stub solvers and stub controllers (as torchode tests its loop):
what the loop asks, in what order, and what it records — independent of any real RK method. The
adaptive cases run on both drivers: the eager one (``integrate_on_times``) and the traced one's
body (``march``, run by its Python runner, as per-sample solves run it eagerly: the stubs'
scripted ratios need a Python call per step), which must take the same steps."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from odegrad.errors import MaxStepsExceeded, NonFiniteValue, StepSizeUnderflow
from odegrad.solvers import IntegrationConfig, Status, StepResult, StepSolver, integrate_on_times
from odegrad.solvers._traced import march, python_loop

D = torch.float64
DRIVERS = ("eager", "traced")


class StubSolver(StepSolver):
    """y' = 1 integrated exactly (y1 = y0 + h); logs every init and step (as floats); the error
    estimate is the constant 1 (the stub controller decides acceptance)."""

    order = 2

    def __init__(self, error_estimate: bool):
        self.error_estimate = error_estimate
        self.steps: list[tuple[float, float]] = []
        self.inits: list[float] = []

    def init(self, func, t0, y0):
        self.inits.append(float(t0))
        return func(t0, y0)

    def step(self, func, t0, h, y0, state):
        self.steps.append((float(t0), float(h)))
        carried = func(t0 + h, y0)
        return StepResult(y0 + h, torch.ones_like(y0) if self.error_estimate else None, (y0, h), carried, None)

    def interpolate(self, dense_info, t0, h, t):
        y0, _ = dense_info
        return y0 + (t - t0)


class StubController:
    """Scripted error ratios; the next step is always ``step``. ``error_ratio`` serves the eager
    driver, ``scaled_error`` (one ratio per batch entry) the traced one."""

    rtol = atol = 1.0  # read by the traced driver; the stub's ratios ignore them

    def __init__(self, ratios: list[float], step: float, stops: tuple[float, ...] = (),
                 jumps: tuple[float, ...] = ()):
        self.ratios = list(ratios)
        self.step = self.first_step = step
        self.stops, self.jumps = stops, jumps
        self.calls: list[tuple[float, float, bool]] = []

    def _ratio(self) -> float:
        return self.ratios.pop(0) if self.ratios else 0.5

    def error_ratio(self, y0, y1, error):
        return torch.tensor(self._ratio(), dtype=D)

    def scaled_error(self, y0, y1, error, rtol, atol, norm):
        return torch.full((len(y0),) + (1,) * (y0.dim() - 1), self._ratio(), dtype=D)

    def next_step(self, h, ratio, previous_ratio, order, accepted):
        self.calls.append((float(h), float(ratio), bool(accepted)))
        return h * 0 + self.step  # the size along the solve, a float or a tensor like h


def _field(t, y):
    return torch.ones_like(y)


def _adaptive(ratios, step, stops=(), jumps=(), **config):
    controller = StubController(ratios, step, stops, jumps)
    return controller, IntegrationConfig(controller=controller, **config)


class Run(NamedTuple):
    ys: list[float]
    accepted: int
    rejected: int
    status: Status


def _run(driver: str, solver: StubSolver, times: list[float], config: IntegrationConfig) -> Run:
    """The stub solve of y' = 1 from y = 0 through ``times`` on ``driver`` (the eager driver raises
    where the traced one reports a status)."""
    y0 = torch.zeros(1, dtype=D)
    if driver == "eager":
        sol = integrate_on_times(solver, _field, y0, times, config)
        return Run(sol.ys.flatten().tolist(), sol.stats.steps_accepted, sol.stats.steps_rejected, Status.SUCCESS)
    marched = march(solver, _field, y0[None], torch.tensor([times], dtype=D), config,
                    lambda x: x.abs().amax(dim=1, keepdim=True), loop=python_loop)
    return Run(marched.ys.flatten().tolist(), int(marched.accepted[0]), int(marched.rejected[0]),
               Status(int(marched.status[0])))


def test_fixed_grid_steps_and_dense_outputs():
    solver = StubSolver(error_estimate=False)
    sol = integrate_on_times(solver, _field, torch.zeros(1, dtype=D), [0.0, 0.25, 1.0],
                             IntegrationConfig(step_size=0.5))
    assert solver.steps == [(0.0, 0.5), (0.5, 0.5)]
    assert sol.ys.flatten().tolist() == [0.0, 0.25, 1.0]  # 0.25 interpolated inside the first step
    assert sol.stats.steps_accepted == 2 and sol.stats.steps_rejected == 0
    assert sol.stats.nfe_forward == 1 + 2  # init + one evaluation per stub step
    assert torch.isnan(sol.steps.error).all()


@pytest.mark.parametrize("driver", DRIVERS)
def test_rejected_steps_are_retried_and_counted(driver):
    solver = StubSolver(error_estimate=True)
    controller, config = _adaptive([0.5, 2.0, 3.0, 0.5], step=0.4)
    run = _run(driver, solver, [0.0, 0.3, 1.0], config)
    assert [t0 for t0, _ in solver.steps[:4]] == pytest.approx([0.0, 0.4, 0.4, 0.4])
    assert [accepted for _, _, accepted in controller.calls[:4]] == [True, False, False, True]
    assert (run.accepted, run.rejected, run.status) == (3, 2, Status.SUCCESS)
    assert run.ys == pytest.approx([0.0, 0.3, 1.0])  # 0.3 read off the first step's dense output


def test_the_eager_driver_records_accepted_steps_only():
    _, config = _adaptive([0.5, 2.0, 3.0, 0.5], step=0.4)
    sol = integrate_on_times(StubSolver(error_estimate=True), _field, torch.zeros(1, dtype=D), [0.0, 1.0], config)
    assert sol.steps.error.tolist()[:2] == [0.5, 0.5]


def test_steps_land_exactly_on_stops_and_recompute_state_after_jumps():
    solver = StubSolver(error_estimate=True)
    _, config = _adaptive([], step=0.3, stops=(0.5,), jumps=(0.7,))
    sol = integrate_on_times(solver, _field, torch.zeros(1, dtype=D), [0.0, 1.0], config)
    ends = [t0 + h for t0, h in solver.steps]
    assert 0.5 in ends and 0.7 in ends  # landed exactly, not passed
    assert all(not (t0 < 0.5 < t0 + h or t0 < 0.7 < t0 + h) for t0, h in solver.steps)
    assert solver.inits == [0.0, 0.7]  # the carried state is recomputed after the jump only
    assert sol.next_step == pytest.approx(0.3)  # the controller's proposal, not the clipped step


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("times", [[0.0, 1.0], [1.0, 0.0]], ids=["forward", "reverse"])
def test_steps_land_exactly_on_stops_in_either_direction(driver, times):
    """The traced driver refuses jumps (a recomputed state needs a value read); stops it takes."""
    solver = StubSolver(error_estimate=True)
    _, config = _adaptive([], step=0.3, stops=(0.5, 0.65, 1.0, 2.0))
    run = _run(driver, solver, times, config)
    sign = 1.0 if times[1] > times[0] else -1.0
    assert all(sign * h > 0 for _, h in solver.steps)
    ends = [t0 + h for t0, h in solver.steps]
    assert [end for end in ends if end in (0.5, 0.65)] == sorted((0.5, 0.65), key=lambda x: sign * x)
    assert sign * (ends[-1] - times[-1]) >= 0  # output times are read off steps, which may pass them
    assert run.ys == pytest.approx([t - times[0] for t in times])


def test_the_drivers_take_the_same_steps():
    logs = []
    for driver in DRIVERS:
        solver = StubSolver(error_estimate=True)
        _, config = _adaptive([0.3, 1.5, 0.9, 4.0, 0.2], step=0.35, stops=(0.6,))
        logs.append((_run(driver, solver, [0.0, 0.5, 1.2], config), solver.steps, solver.inits))
    assert logs[0] == logs[1]


@pytest.mark.parametrize("driver", DRIVERS)
def test_max_steps_and_underflow_and_non_finite_are_reported(driver):
    """The eager driver raises with the time and the NFE; the traced one ends with a status."""
    cases = [(MaxStepsExceeded, Status.MAX_STEPS, _adaptive([2.0] * 10, step=0.1, max_steps=3)[1]),
             (StepSizeUnderflow, Status.UNDERFLOW, _adaptive([0.5], step=1e-301)[1]),
             (NonFiniteValue, Status.NON_FINITE, _adaptive([float("nan")], step=0.1)[1])]
    for error, status, config in cases:
        if driver == "traced":
            run = _run(driver, StubSolver(True), [0.0, 1.0], config)
            assert run.status == status and run.ys[0] == 0.0 and torch.isnan(torch.tensor(run.ys[1]))
            continue
        with pytest.raises(error) as info:
            _run(driver, StubSolver(True), [0.0, 1.0], config)
        assert info.value.nfe > 0 and 0.0 <= info.value.t < 1.0


def test_fixed_grid_step_count_is_checked_before_the_grid_is_built():
    with pytest.raises(MaxStepsExceeded, match="needs 10000000000 steps"):
        integrate_on_times(StubSolver(False), _field, torch.zeros(1, dtype=D), [0.0, 1.0],
                           IntegrationConfig(step_size=1e-10))


@pytest.mark.parametrize("driver", ["eager", "traced"])
def test_a_reverse_solve_takes_exactly_the_steps_of_the_mirrored_forward_solve(driver):
    """The direction is fixed once at the entry and step control runs along the solve: solving
    y' = f(t, y) from 0 back to -2 takes the steps of solving z' = -f(-s, z) from 0 to 2, first
    step included (its trial evaluation goes backwards too: it went forwards before, at t = +0.01
    here, and the two solves differed), with bitwise equal states. torchdiffeq solves a
    reverse-time problem as that mirrored one."""
    import odegrad

    def f(t, y):
        return torch.exp(50 * t) * y + torch.cos(3 * t) * torch.tanh(y)

    def mirrored(s, z):
        return -f(-s, z)

    y0 = torch.tensor([0.7, -1.2, 0.3], dtype=D)
    settings = dict(method="dopri5", rtol=1e-6, atol=1e-8, options={"driver": driver})
    backwards = odegrad.solve(f, y0, torch.linspace(0, -2, 5, dtype=D), **settings)
    forwards = odegrad.solve(mirrored, y0, torch.linspace(0, 2, 5, dtype=D), **settings)
    assert torch.equal(backwards.ys, forwards.ys)
    assert backwards.stats == forwards.stats
    assert float(backwards.next_step) == -float(forwards.next_step) < 0
    if driver == "eager":  # (the traced driver shares the heuristic; its func may not read t)
        assert torch.equal(backwards.steps.t, -forwards.steps.t) and torch.equal(backwards.steps.h, -forwards.steps.h)
        calls = []
        odegrad.solve(lambda t, y: calls.append(float(t)) or f(t, y), y0, torch.tensor([0.0, -2.0], dtype=D),
                      **settings)
        assert calls[1] < 0  # the trial evaluation of the first-step heuristic, as torchdiffeq's


def test_a_time_axis_needs_a_direction():
    from odegrad.errors import InvalidInput
    from odegrad.solvers import TimeAxis

    assert [TimeAxis.of(*span).sign for span in [(0.0, 2.0), (2.0, -1.0), (0.0, float("inf")), (1.0, float("-inf")),
                                                   (3.0, 3.0)]] == [1.0, -1.0, 1.0, -1.0, 1.0]
    axis = TimeAxis.of(1.0, -1.0)
    assert axis.between([2.0, 0.5, -0.5, 1.0, -1.0, -3.0], 1.0, -1.0) == [0.5, -0.5]
    assert axis.ordered([0.0, 0.7, -0.2]) == [0.7, 0.0, -0.2] and axis.back(axis.along(0.3)) == 0.3
    with pytest.raises(InvalidInput, match="time span: got nan to 1.0"):
        TimeAxis.of(float("nan"), 1.0)
    rows = TimeAxis.of_rows(torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, -1.0]], dtype=D), 1)
    assert rows.sign.tolist() == [[1.0], [-1.0]]
