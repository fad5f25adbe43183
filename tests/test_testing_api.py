"""Unit tests of odegrad.testing: exact references, the error model, check_gradients and the
``odegrad check`` command."""

from __future__ import annotations

import textwrap

import pytest
import torch

from odegrad import odeint
from odegrad.cli import main
from odegrad.errors import InvalidInput, UnknownName
from odegrad.gradients import Backend, Direct
from odegrad.testing import (
    LinearField,
    RandomMLPField,
    RandomProjectionLoss,
    Settings,
    accurate_settings,
    check_gradients,
    converged_gradients,
    expected_error,
    finite_differences,
    halved_grids,
    linear_gradients,
    linear_solution,
    nested_grid,
    reference_error,
    registered_pairs,
    relative_disagreement,
    run_converging,
    run_pair,
    segment_counts,
)
from odegrad.testing.strategies import matrix_with_spectrum

F64 = torch.float64


def _linear_problem():
    A = torch.tensor([[-0.4, 1.1], [-0.9, -0.2]], dtype=F64)
    b = torch.tensor([0.3, -0.5], dtype=F64)
    y0 = torch.tensor([[1.0, -0.5], [0.2, 0.7]], dtype=F64)
    t = torch.tensor([0.0, 0.4, 1.1], dtype=F64)
    return A, b, y0, t


class ScaledGradient(Backend):
    """A deliberately wrong backend: direct's values, gradients scaled by (1 + error)."""

    name = "scaled"

    def __init__(self, error: float):
        self.error = error

    def solve(self, problem):
        solution = Direct().solve(problem)
        ys = solution.ys
        solution.ys = ys + self.error * (ys - ys.detach())
        return solution

    def __repr__(self) -> str:
        return f"scaled({self.error})"


def test_linear_solution_matches_scalar_formula_and_tight_solve():
    a, b, y0 = -0.7, 0.4, 1.3
    t = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    ys = linear_solution(torch.tensor([[a]], dtype=F64), torch.tensor([y0], dtype=F64), t,
                         torch.tensor([b], dtype=F64))
    dt = t - t[0]
    closed = torch.exp(a * dt) * y0 + (torch.exp(a * dt) - 1) / a * b
    torch.testing.assert_close(ys[:, 0], closed, rtol=1e-14, atol=1e-14)

    A, b2, y02, t2 = _linear_problem()
    field = LinearField(A, b2)
    numeric = odeint(field, y02, t2.flip(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(linear_solution(A, y02, t2.flip(0), b2), numeric.detach(), rtol=1e-10, atol=1e-10)


def test_linear_gradients_pass_gradcheck_and_have_the_input_shapes():
    A, b, y0, t = _linear_problem()
    loss = RandomProjectionLoss(3)
    grads = linear_gradients(A, y0, t, loss, b)
    assert {k: tuple(v.shape) for k, v in grads.items()} == {
        "y0": (2, 2), "A": (2, 2), "t": (3,), "b": (2,)}
    leaves = [x.clone().requires_grad_(True) for x in (A, y0, t, b)]
    assert torch.autograd.gradcheck(lambda A_, y_, t_, b_: loss(linear_solution(A_, y_, t_, b_)), leaves)
    # dL/dt_i = f(t_i, y_i)·dL/dy_i for i ≥ 1: the exact flow's time derivative.
    ys = linear_solution(A, y0, t, b).requires_grad_(True)
    dys = torch.autograd.grad(loss(ys), ys)[0]
    torch.testing.assert_close(grads["t"][1:], ((ys @ A.T + b) * dys).sum(dim=(1, 2))[1:].detach())


def test_linear_solution_rejects_bad_shapes():
    with pytest.raises(InvalidInput, match="A"):
        linear_solution(torch.zeros(2, 3, dtype=F64), torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64))
    with pytest.raises(InvalidInput, match="y0"):
        linear_solution(torch.zeros(2, 2, dtype=F64), torch.zeros(3, dtype=F64), torch.zeros(2, dtype=F64))


def test_matrix_with_spectrum_has_that_spectrum():
    A = matrix_with_spectrum([complex(-0.3, 1.2), complex(-0.3, -1.2), complex(0.2, 0.0)], seed=5)
    eig = sorted(torch.linalg.eigvals(A).tolist(), key=lambda z: (z.real, z.imag))
    expected = sorted([complex(-0.3, 1.2), complex(-0.3, -1.2), complex(0.2, 0.0)], key=lambda z: (z.real, z.imag))
    assert all(abs(x - y) < 1e-12 for x, y in zip(eig, expected))


def test_error_model_orders_and_settings():
    fine = accurate_settings("rk4", span=1.0, scale=1.0)
    h = fine.options["step_size"]
    coarse = Settings(options={"step_size": 2 * h})
    # Halving the step of an order-4 method divides the predicted error by 2^4.
    ratio = ((expected_error("rk4", coarse, 1.0, 1.0) - 1e-9) / (expected_error("rk4", fine, 1.0, 1.0) - 1e-9))
    assert ratio == pytest.approx(16.0)
    adaptive = accurate_settings("dopri5", span=1.0, scale=1.0)
    assert adaptive.options == {} and adaptive.rtol < 1e-6
    few, many = (expected_error("dopri5", adaptive, 1.0, 1.0, steps=n) for n in (20, 40))
    assert few < many
    with pytest.raises(InvalidInput, match="step_size"):
        expected_error("rk4", Settings(), 1.0, 1.0)
    with pytest.raises(InvalidInput, match="span"):
        accurate_settings("rk4", span=0.0, scale=1.0)


def test_relative_disagreement_names_the_worst_group():
    a = {"y0": torch.tensor([1.0, 2.0]), "A": torch.tensor([4.0])}
    b = {"y0": torch.tensor([1.0, 2.0]), "A": torch.tensor([4.4])}
    worst, where = relative_disagreement(a, b)
    assert where == "A" and worst == pytest.approx(0.4 / 4.4)
    with pytest.raises(InvalidInput, match="gradient groups"):
        relative_disagreement(a, {"y0": b["y0"]})


def test_run_pair_reports_every_gradient_group_and_cost():
    field = RandomMLPField(2, 4, 1, "tanh", time_dependent=True, seed=1, rate_target=0.8)
    y0 = torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    run = run_pair(field, y0, t, "dopri5", "backsolve", settings=accurate_settings("dopri5", 1.0, 1.0),
                   loss=RandomProjectionLoss(0))
    assert run.status == "ok" and run.nfe_forward > 0 and run.nfe_backward > 0 and run.seconds > 0
    assert set(run.grads) == {"y0", "t", *(name for name, _ in field.named_parameters())}
    assert run.grads["y0"].shape == y0.shape and run.grads["t"].shape == t.shape


def test_finite_differences_match_exact_linear_gradients():
    A, b, y0, t = _linear_problem()
    field = LinearField(A, b)
    loss = RandomProjectionLoss(1)
    fd = finite_differences(field, y0, t, loss, n_directions=3, seed=2)
    exact = linear_gradients(A, y0, t, loss, b)
    assert fd.error_of(exact) < 1e-8
    wrong = {**exact, "A": exact["A"] * 1.01}
    assert fd.error_of(wrong) > 1e-4


def test_check_gradients_passes_on_a_small_mlp():
    field = RandomMLPField(2, 6, 2, "softplus", time_dependent=True, seed=4, rate_target=1.0).to(torch.float32)
    y0 = torch.randn(2, 2, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 0.3, 0.8])
    report = check_gradients(field, y0, t, methods=("dopri5", "rk4"), gradients=("direct", "backsolve"),
                             fd_directions=2)
    assert report.passed, report.table()
    assert [r.label for r in report.runs] == ["dopri5/direct", "dopri5/backsolve", "rk4/direct", "rk4/backsolve"]
    assert all(r.nfe_forward > 0 for r in report.runs)
    against_reference = [c for c in report.comparisons if c.other == "converged reference"]
    assert [c.first for c in against_reference] == [r.label for r in report.runs]
    assert [(c.first, c.other) for c in report.comparisons[4:]] == [("converged reference", "finite differences")]
    assert all(c.disagreement <= c.tolerance for c in report.comparisons)
    # rk4 runs on nested grids h and h/2: its Richardson value, held to the order-5 model
    assert all(r.extrapolated is not None for r in report.runs if r.method == "rk4")
    assert report.fd is not None and len(report.fd.directions) == len(report.runs[0].grads) + 2
    text = report.table()
    assert "rk4/backsolve" in text and "finite differences" in text and text.splitlines()[-1].startswith("PASS")


def test_check_gradients_catches_a_wrong_backend():
    A, b, y0, t = _linear_problem()
    report = check_gradients(LinearField(A, b), y0, t, methods=("dopri5",),
                             gradients=("direct", ScaledGradient(1e-3)), fd_directions=2)
    assert not report.passed
    failed = [c for c in report.comparisons if not c.passed]
    assert [c.first for c in failed] == ["dopri5/scaled(0.001)"]
    assert failed[0].disagreement == pytest.approx(1e-3, rel=0.05)
    assert report.worst is not None and not report.worst.passed
    assert report.table().splitlines()[-1].startswith("FAIL")


def test_check_gradients_reports_not_applicable_and_errors_without_failing_silently():
    A, b, y0, t = _linear_problem()

    class Broken(Backend):
        def solve(self, problem):
            raise RuntimeError("boom")

    report = check_gradients(LinearField(A, b), y0, t, gradients=("direct", Broken()), fd_directions=0)
    statuses = {r.gradient: r.status for r in report.runs}
    assert statuses["direct"] == "ok" and list(statuses.values()).count("error") == 1
    assert not report.passed and "boom" in report.table()


def test_check_gradients_validates_arguments():
    A, b, y0, t = _linear_problem()
    field = LinearField(A, b)
    with pytest.raises(InvalidInput, match="methods"):
        check_gradients(field, y0, t, methods=())
    with pytest.raises(UnknownName):
        check_gradients(field, y0, t, methods=("no-such-method",))
    with pytest.raises(InvalidInput, match="tolerance"):
        check_gradients(field, y0, t, tolerance=-1.0)
    with pytest.raises(InvalidInput, match="t"):
        check_gradients(field, y0, t[:1])
    with pytest.raises(InvalidInput, match=r"params\[0\]"):
        check_gradients(lambda tt, y: y, y0, t, params=[torch.ones(2)])


def test_check_gradients_on_a_plain_callable_with_explicit_params():
    A, _, y0, t = _linear_problem()
    A = A.clone().requires_grad_(True)
    report = check_gradients(lambda tt, y: y @ A.T, y0, t, gradients=("direct", "backsolve"),
                             params=[A], fd_directions=1)
    assert report.passed, report.table()
    assert {"params[0]", "y0", "t"} == set(report.runs[0].grads)


def test_registered_pairs_follow_the_registries():
    from odegrad import backend_names, solver_names

    pairs = registered_pairs(external=False)
    assert pairs == [(m, g) for m in solver_names() for g in backend_names()]
    assert ("torchdiffeq:dopri5", "direct") in registered_pairs()


def _write_target(tmp_path, body: str, name: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))


def test_cli_check_prints_the_table_and_exits_zero(tmp_path, monkeypatch, capsys):
    _write_target(tmp_path, """
        import torch
        from odegrad.testing import LinearField

        def make():
            A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=torch.float64)
            y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
            return LinearField(A), y0, torch.linspace(0, 1, 3, dtype=torch.float64)
        """, "cli_target_ok")
    monkeypatch.syspath_prepend(str(tmp_path))
    status = main(["check", "cli_target_ok:make", "--methods", "dopri5,rk4", "--gradients", "direct,backsolve",
                   "--fd-directions", "1"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "dopri5/backsolve" in out and "rk4/direct" in out and out.strip().splitlines()[-1].startswith("PASS")


def test_cli_check_exits_nonzero_on_disagreement_and_on_bad_targets(tmp_path, monkeypatch, capsys):
    _write_target(tmp_path, """
        import torch
        from odegrad.testing import LinearField

        def make():
            f64 = torch.float64
            A = torch.tensor([[-0.4, 1.1], [-0.9, -0.2]], dtype=f64)
            b = torch.tensor([0.3, -0.5], dtype=f64)
            return LinearField(A, b), torch.tensor([[1.0, -0.5]], dtype=f64), torch.tensor([0.0, 1.1], dtype=f64)
        """, "cli_target_linear")
    monkeypatch.syspath_prepend(str(tmp_path))
    # A tolerance below the solver's accuracy makes the (honest) pairs disagree: exit 1.
    status = main(["check", "cli_target_linear:make", "--gradients", "direct,backsolve", "--tolerance", "1e-15",
                   "--fd-directions", "1"])
    assert status == 1 and "FAIL" in capsys.readouterr().out
    assert main(["check", "no_such_module_xyz:make"]) == 2
    assert "importable module" in capsys.readouterr().err
    _write_target(tmp_path, "def make():\n    return 42\n", "cli_target_bad")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["check", "cli_target_bad:make"]) == 2
    assert "(func, y0, t)" in capsys.readouterr().err


def test_cli_check_runs_a_saved_model_and_never_unpickles(tmp_path, capsys):
    from odegrad.export import MLPField, save_model

    from odegrad.models import NeuralODE

    torch.manual_seed(0)
    model = NeuralODE(MLPField(dim=2, hidden=8).double(), t=(0.0, 0.5, 1.0), rtol=1e-9, atol=1e-11)
    saved = tmp_path / "model.pt"
    save_model(model, saved, torch.randn(3, 2, dtype=torch.float64))
    status = main(["check", str(saved), "--methods", "dopri5", "--gradients", "direct,backsolve",
                   "--fd-directions", "1"])
    assert status == 0, capsys.readouterr().out
    pickled = tmp_path / "pickled.pt"
    torch.save({"func": model.func, "y0": torch.zeros(2), "t": torch.tensor([0.0, 1.0])}, pickled)
    assert main(["check", str(pickled)]) == 2
    assert "save_model" in capsys.readouterr().err


def test_nested_grids_halve_every_step_through_the_output_times():
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    assert segment_counts(t, 0.25) == [2, 3]
    assert nested_grid(t, [2, 3]) == pytest.approx([0.0, 0.15, 0.3, 0.3 + 0.7 / 3, 0.3 + 1.4 / 3, 1.0])
    coarse, fine = halved_grids(Settings(options={"step_size": 0.25}), t)
    assert fine.options["grid"][::2] == pytest.approx(coarse.options["grid"]) and len(fine.options["grid"]) == 11
    again, _ = halved_grids(coarse, t)
    assert again.options["grid"] == coarse.options["grid"]
    with pytest.raises(InvalidInput, match="counts"):
        nested_grid(t, [2])
    with pytest.raises(InvalidInput, match="step"):
        segment_counts(t, 0.0)
    with pytest.raises(InvalidInput, match="settings.options"):
        halved_grids(Settings(), t)


def test_richardson_values_converge_an_order_faster_and_the_reference_is_exact():
    A, b, y0, t = _linear_problem()
    field, loss = LinearField(A, b), RandomProjectionLoss(3)
    exact = linear_gradients(A, y0, t, loss, b)
    settings = Settings(options={"step_size": 0.05})
    coarse, _ = halved_grids(settings, t)
    plain = run_pair(field, y0, t, "euler", "backsolve", settings=coarse, loss=loss)
    extrapolated = run_converging(field, y0, t, "euler", "backsolve", settings=settings, loss=loss)
    assert extrapolated.extrapolated == coarse
    plain_error, extrapolated_error = (reference_error(r.grads, exact)[0] for r in (plain, extrapolated))
    assert extrapolated_error < plain_error / 20  # measured: 9.9e-2 -> 2.3e-3 (first order -> second)
    reference = converged_gradients(field, y0, t, loss)
    assert reference.change <= 1e-11 and reference_error(reference.grads, exact)[0] < 1e-11


def test_reference_error_divides_by_the_reference_only():
    reference = {"A": torch.tensor([1.0, 0.0]), "b": torch.tensor([4.0])}
    inflated = {"A": torch.tensor([1.7, 0.0]), "b": torch.tensor([4.0])}
    assert reference_error(inflated, reference) == (pytest.approx(0.7), "A")
    assert relative_disagreement(inflated, reference)[0] == pytest.approx(0.7 / 1.7)  # symmetric: deflated
    with pytest.raises(InvalidInput, match="gradient groups"):
        reference_error({"A": reference["A"]}, reference)


def test_finite_differences_along_each_group_see_an_error_in_one_group():
    field = RandomMLPField(2, 8, 1, "tanh", seed=3)
    y0 = torch.randn(2, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64)
    loss = RandomProjectionLoss(0)
    reference = converged_gradients(field, y0, t, loss).grads
    fd = finite_differences(field, y0, t, loss, n_directions=0, along=reference)
    assert len(fd.directions) == len(reference) and fd.error_of(reference) < 1e-8
    wrong = {**reference, "net.0.weight": reference["net.0.weight"] * 1.01}
    assert fd.error_of(wrong, reference=reference) == pytest.approx(1e-2, rel=1e-3)
    with pytest.raises(InvalidInput, match="n_directions"):
        finite_differences(field, y0, t, loss, n_directions=0)
    with pytest.raises(InvalidInput, match="along"):
        finite_differences(field, y0, t, loss, n_directions=0, along={"y0": reference["y0"]})
