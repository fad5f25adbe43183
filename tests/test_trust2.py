"""Regression tests of issue 24 (trust, round two): the reverse-drift check accepts torchdiffeq's
own cases, and each input of the catalogue gives the right answer or an odegrad error."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import odegrad
from odegrad.errors import ReverseSolveDrift
from odegrad.gradients import Backsolve, GaussQuadrature

D = torch.float64


# ---- the reverse-drift check -------------------------------------------------------------------

class CubicField(nn.Module):
    """torchdiffeq's ``TestCompareAdjointGradient`` field: y' = y³A, with a module it never uses."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]]))
        self.unused_module = nn.Linear(2, 5)

    def forward(self, t, y):
        return torch.mm(y ** 3, self.A)


def _cubic_gradients(dtype: torch.dtype, gradient: str, grad_ys: torch.Tensor | None = None):
    torch.manual_seed(0)
    func = CubicField().to(dtype)
    y0 = torch.tensor([[2.0, 0.0]], dtype=dtype, requires_grad=True)
    t = torch.linspace(0.0, 25.0, 10, dtype=dtype, requires_grad=True)
    ys = odegrad.odeint(func, y0, t, gradient=gradient)  # torchdiffeq's defaults: dopri5, 1e-7 / 1e-9
    if grad_ys is None:
        grad_ys = torch.rand_like(ys) * 0.1
    ys.backward(grad_ys)
    return grad_ys, y0.grad, t.grad, func.A.grad, func.unused_module.weight.grad


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gradient", ["backsolve", "gq"])
def test_torchdiffeq_against_dopri5_passes_without_a_drift_warning(dtype, gradient):
    """torchdiffeq's test_against_dopri5 with its bounds (3e-4 on y0, 1e-4 on t, 2e-3 on A): the
    float32 solve at rtol 1e-7 misses the stored states by float32 rounding, not by drift."""
    grad_ys, *expected = _cubic_gradients(dtype, "direct")
    _, y0_grad, t_grad, a_grad, unused = _cubic_gradients(dtype, gradient, grad_ys)
    assert float((y0_grad - expected[0]).abs().max()) < 3e-4
    assert float((t_grad - expected[1]).abs().max()) < 1e-4
    assert float((a_grad - expected[2]).abs().max()) < 2e-3
    assert float(unused.abs().max()) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lam", [30.0, 60.0])
@pytest.mark.parametrize("backend", [Backsolve, GaussQuadrature])
def test_reverse_solves_of_dissipative_dynamics_are_still_refused(dtype, lam, backend):
    """y' = diag(−1, −λ)·y over [0, 2] at rtol 1e-6: dL/dA would be wrong by 1e16 (λ = 30) and
    6e41 (λ = 60); in float32 at λ = 60 the rebuilt state overflows first."""
    a = torch.diag(torch.tensor([-1.0, -lam], dtype=dtype)).requires_grad_()
    ys = odegrad.odeint(lambda t, y: y @ a.T, torch.ones(2, dtype=dtype), torch.tensor([0.0, 2.0], dtype=dtype),
                        gradient=backend(), params=a, rtol=1e-6, atol=1e-8)
    with pytest.raises((ReverseSolveDrift, odegrad.errors.NonFiniteValue)) as info:
        ys.sum().backward()
    if isinstance(info.value, ReverseSolveDrift):
        assert info.value.drift > 1e10
    else:
        assert dtype == torch.float32 and lam == 60.0


class _LatentField(nn.Module):
    def __init__(self, latent: int = 4, hidden: int = 20):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                 nn.Linear(hidden, latent))

    def forward(self, t, z):
        return self.net(z)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_latent_ode_trains_with_odeint_adjoint_in_float32():
    """torchdiffeq's latent_ode.py example, shrunk (8 noisy spirals, 12 samples, 20 iterations):
    odeint_adjoint at the default tolerances, float32, never reports drift."""
    torch.manual_seed(0)
    ts = torch.linspace(0.0, 6 * math.pi * 0.2, 12)
    starts = torch.rand(8, 1) * 3 * math.pi
    phase = starts + ts
    radius = (0.5 + 0.3 * phase) / 5
    data = torch.stack([radius * phase.cos(), radius * phase.sin()], -1) + 0.05 * torch.randn(8, 12, 2)
    func, encoder, decoder = _LatentField(), nn.GRU(2, 16, batch_first=True), nn.Linear(4, 2)
    head = nn.Linear(16, 8)
    parameters = [*func.parameters(), *encoder.parameters(), *decoder.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=0.01)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        mean, logvar = head(encoder(data.flip(1))[1][0]).chunk(2, dim=-1)
        z0 = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        z = odegrad.odeint_adjoint(func, z0, ts).permute(1, 0, 2)
        loss = (decoder(z) - data).pow(2).mean() + 0.01 * (mean.pow(2) + logvar.exp()).mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


# ---- parameters and higher-order gradients (items 1, 2, 3, 13) ---------------------------------

ADJOINT = ("backsolve", "gq", "interp")
T = torch.tensor([0.0, 0.5, 1.0], dtype=D)


def _w():
    return torch.tensor([[-1.0, 0.2], [0.0, -0.5]], dtype=D, requires_grad=True)


@pytest.mark.parametrize("gradient", ADJOINT)
def test_a_tensor_listed_twice_in_params_gets_its_gradient_once(gradient):
    w = _w()
    field = lambda t, y: torch.tanh(y @ w.T)
    odegrad.odeint(field, torch.ones(2, dtype=D), T, params=[w])[-1].sum().backward()
    expected, w.grad = w.grad.clone(), None
    odegrad.odeint(field, torch.ones(2, dtype=D), T, gradient=gradient, params=[w, w])[-1].sum().backward()
    torch.testing.assert_close(w.grad, expected, rtol=1e-5, atol=1e-8)


class _Holder:
    def __init__(self, p):
        self.p = p


EXTERNAL = torch.tensor(-1.4, dtype=D, requires_grad=True)


class _Unregistered(nn.Module):
    """Reaches a trainable tensor it does not own: as a plain attribute, through another object
    or a list, or as a global its forward names."""

    def __init__(self, how: str):
        super().__init__()
        self.lin = nn.Linear(2, 2).double()
        self.how = how
        if how == "attribute":
            self.scale = EXTERNAL
        elif how == "object":
            self.holder = _Holder(EXTERNAL)
        elif how == "list":
            self.extras = [EXTERNAL]

    def forward(self, t, y):
        scale = {"attribute": lambda: self.scale, "object": lambda: self.holder.p,
                 "list": lambda: self.extras[0], "global": lambda: EXTERNAL}[self.how]()
        return scale * self.lin(y)


@pytest.mark.parametrize("how", ["attribute", "object", "list", "global"])
@pytest.mark.parametrize("gradient", ADJOINT)
def test_module_fields_using_parameters_they_do_not_own_are_refused(how, gradient):
    field = _Unregistered(how)
    with pytest.raises(odegrad.errors.InvalidInput, match="not its registered parameters"):
        odegrad.odeint(field, torch.ones(2, dtype=D), T, gradient=gradient)
    ys = odegrad.odeint(field, torch.ones(2, dtype=D), T, gradient=gradient,
                        params=[*field.parameters(), EXTERNAL])  # listing them works
    ys[-1].sum().backward()
    assert EXTERNAL.grad is not None
    EXTERNAL.grad = None


def test_a_module_keeping_its_last_output_is_not_refused():
    class Logging(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2).double()
            self.last = None

        def forward(self, t, y):
            self.last = self.lin(y)  # a non-leaf that requires grad, kept between calls
            return self.last

    field = Logging()
    for _ in range(2):
        odegrad.odeint(field, torch.ones(2, dtype=D), T, gradient="backsolve")[-1].sum().backward()


@pytest.mark.parametrize("gradient", ADJOINT)
def test_double_backward_through_adjoint_backends_is_refused(gradient):
    w = _w()
    ys = odegrad.odeint(lambda t, y: torch.tanh(y @ w.T), torch.ones(2, dtype=D), T, gradient=gradient, params=w)
    with pytest.raises(odegrad.errors.UnsupportedCombination, match="create_graph"):
        torch.autograd.grad(ys[-1].sum(), [w], create_graph=True)
    ys = odegrad.odeint(lambda t, y: torch.tanh(y @ w.T), torch.ones(2, dtype=D), T, gradient=gradient, params=w)
    (g,) = torch.autograd.grad(ys[-1].sum(), [w])  # first order still works
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("gradient", ADJOINT)
def test_func_closing_over_a_tensor_computed_from_params_is_refused(gradient):
    w = _w()
    m = 2 * w
    ys = odegrad.odeint(lambda t, y: y @ m.T, torch.ones(2, dtype=D), T, gradient=gradient, params=[w])
    with pytest.raises(odegrad.errors.InvalidInput, match="computed from params before the solve"):
        ys.sum().backward()


@pytest.mark.parametrize("gradient", ADJOINT)
def test_a_float64_func_output_for_a_float32_state_is_cast(gradient):
    w = torch.tensor([[-1.0, 0.2], [0.0, -0.5]], requires_grad=True)
    field = lambda t, y: (y @ w.T).double()
    odegrad.odeint(field, torch.ones(2), T.float(), params=[w]).sum().backward()
    expected, w.grad = w.grad.clone(), None
    odegrad.odeint(field, torch.ones(2), T.float(), gradient=gradient, params=[w]).sum().backward()
    torch.testing.assert_close(w.grad, expected, rtol=1e-4, atol=1e-5)


# ---- regularizers and dense output (items 4, 5, 14) --------------------------------------------

_MIX = torch.tensor([[-1.0, 0.3], [0.2, -0.5]], dtype=D)
_STATE = torch.tensor([[1.0, 0.5, 0.3, -0.2], [0.2, 0.1, -1.0, 0.4]], dtype=D)


@pytest.mark.parametrize("regularizer", [
    lambda: odegrad.regularization.Kinetic(jacobian=0.0),  # (the Hutchinson probe depends on the layout)
    lambda: odegrad.regularization.TaylorOrder(),
    lambda: odegrad.regularization.LocalRegularization(generator=torch.Generator().manual_seed(0)),
])
def test_regularizers_give_a_tuple_state_the_value_of_the_concatenated_state(regularizer):
    t = torch.tensor([0.0, 1.0], dtype=D)
    whole = odegrad.solve(lambda tt, y: torch.cat([y[:, :2] @ _MIX.T, y[:, 2:] @ _MIX.T], 1), _STATE, t,
                          regularization=regularizer())
    parts = odegrad.solve(lambda tt, y: (y[0] @ _MIX.T, y[1] @ _MIX.T), (_STATE[:, :2], _STATE[:, 2:]), t,
                          regularization=regularizer())
    torch.testing.assert_close(parts.regularization, whole.regularization, rtol=1e-6, atol=1e-12)


def test_dense_output_of_a_kinetic_regularized_solve_has_the_state_shape():
    t = torch.tensor([0.0, 1.0], dtype=D)
    sol = odegrad.solve(lambda tt, y: -y, torch.ones(3, 2, dtype=D), t, regularization=odegrad.regularization.Kinetic(),
                        dense=True)
    assert sol.ys.shape == (2, 3, 2) and sol.evaluate(0.5).shape == (3, 2)
    torch.testing.assert_close(sol.evaluate(0.5), torch.full((3, 2), math.exp(-0.5), dtype=D), rtol=1e-5, atol=0)
    assert sol.derivative(torch.tensor([0.2, 0.7], dtype=D)).shape == (2, 3, 2)
    parts = odegrad.solve(lambda tt, y: (-y[0], -y[1]), (torch.ones(3, 2, dtype=D), torch.ones(3, dtype=D)), t,
                          regularization=odegrad.regularization.Kinetic(), dense=True)
    assert [p.shape for p in parts.evaluate(0.5)] == [(3, 2), (3,)]


def test_dense_output_at_no_times_is_empty():
    sol = odegrad.solve(lambda tt, y: -y, torch.ones(3, 2, dtype=D), torch.tensor([0.0, 1.0], dtype=D), dense=True)
    assert sol.evaluate(torch.tensor([], dtype=D)).shape == (0, 3, 2)
    assert sol.derivative(torch.empty(2, 0, dtype=D)).shape == (2, 0, 3, 2)


# ---- gq splits its quadrature at jumps (item 7) -------------------------------------------------

@pytest.mark.parametrize("nodes", [None, 4])
def test_gq_splits_the_quadrature_at_jumps_inside_a_segment(nodes):
    w = torch.tensor([[-1.0, 0.4], [-0.3, -0.5]], dtype=D, requires_grad=True)
    field = lambda t, y: torch.tanh(y @ w.T) * torch.where(t < 0.6, 1.0, -2.0)
    grads = {}
    for gradient in ("direct", GaussQuadrature(nodes=nodes)):
        ys = odegrad.odeint(field, torch.ones(2, dtype=D), torch.tensor([0.0, 1.0], dtype=D), gradient=gradient,
                            params=w, options={"jump_t": [0.6]}, rtol=1e-9, atol=1e-10)
        (grads[gradient if gradient == "direct" else "gq"],) = torch.autograd.grad(ys[-1].sum(), w)
    torch.testing.assert_close(grads["gq"], grads["direct"], rtol=1e-6, atol=1e-9)  # one rule across: 0.58 off


# ---- events (items 6, 12, 20) ---------------------------------------------------------------------

_NAN = float("nan")


@pytest.mark.parametrize("event_fn", [
    lambda t, y: y[0] * _NAN,  # NaN from the start (over an unbounded span it ran to max_steps)
    lambda t, y: torch.where(t < 1.0, y[0] + 0.5, torch.full((), _NAN, dtype=D)),  # NaN later, no crossing
])
def test_an_event_function_returning_nan_is_an_error(event_fn):
    with pytest.raises(odegrad.errors.NonFiniteValue, match="event_fn"):
        odegrad.odeint(lambda t, y: torch.zeros_like(y), torch.ones(2, dtype=D), torch.tensor([0.0], dtype=D),
                       event_fn=event_fn)


@pytest.mark.parametrize("field, max_steps, match", [
    (lambda t, y: torch.zeros_like(y), 2000, "overflow"),  # steps grow until the time would overflow
    (lambda t, y: torch.sin(30 * t) * y, 300, "max_steps"),  # steps stay small: max_steps runs out
])
def test_an_event_that_never_fires_over_an_unbounded_span_is_event_not_found(field, max_steps, match):
    with pytest.raises(odegrad.errors.EventNotFound, match=match) as info:
        odegrad.odeint(field, torch.ones(2, dtype=D), torch.tensor([0.0], dtype=D),
                       event_fn=lambda t, y: y[0] + 1.0, options={"max_steps": max_steps})
    assert isinstance(info.value, odegrad.errors.IntegrationFailure) and info.value.nfe > 0


# ---- func's signature and its own shape errors (items 16, 19) ------------------------------------

@pytest.mark.parametrize("func, shown", [(lambda y: -y, "(y)"), (lambda t, y, z: -y, "(t, y, z)")])
def test_a_func_with_the_wrong_signature_is_refused_naming_it(func, shown):
    with pytest.raises(odegrad.errors.InvalidInput, match=r"func.*" + re.escape(shown) + r".*\(t, y\)"):
        odegrad.odeint(func, torch.ones(2, dtype=D), T)


def test_a_shape_bug_in_func_is_named_as_func_failing():
    bias = torch.zeros(5, dtype=D)
    with pytest.raises(odegrad.errors.InvalidInput, match=r"invalid func: got a shape error on its first call") as info:
        odegrad.odeint(lambda t, y: y + bias[:3].sum() + bias, torch.ones(4, 3, dtype=D), T)
    assert "(4, 3)" in str(info.value) and "must match" in str(info.value)


# ---- the command line (items 9, 17) ------------------------------------------------------------

@pytest.mark.parametrize("argv, argument", [
    (["--iters", "0"], "--iters"), (["--threads", "0"], "--threads"), (["--rtol", "-1"], "--rtol"),
    (["--atol", "nan"], "--atol"), (["--out", "a_file"], "--out"),
])
def test_demo_refuses_bad_arguments_with_exit_2_and_one_line(argv, argument, tmp_path, monkeypatch, capsys):
    from odegrad.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    assert main(["demo", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"invalid {argument}" in err


def test_an_imported_module_calling_sys_exit_is_bad_input(tmp_path, monkeypatch, capsys):
    from odegrad.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit()\n")
    assert main(["export", "--import", "exits_at_import", "model.pt", "--out", "model.onnx"]) == 2
    assert "sys.exit" in capsys.readouterr().err
    assert not (tmp_path / "model.onnx").exists()


# ---- crafted model files (items 10, 11, 15, 18) -------------------------------------------------

def _saved_config(tmp_path, edit, model=None):
    """A model saved by save_model, its config changed by ``edit``; returns the crafted file."""
    import json

    from odegrad.export import MLPField, save_model

    model = model or nn.Sequential(nn.Linear(2, 3), nn.GELU(), odegrad.models.NeuralODE(
        MLPField(3, hidden=4, layers=1), method="rk4", options={"step_size": 0.5}), nn.Linear(3, 1))
    save_model(model, tmp_path / "m.pt", torch.randn(2, 2))
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    config = json.loads(payload["config"])
    edit(config)
    payload["config"] = json.dumps(config)
    torch.save(payload, tmp_path / "crafted.pt")
    return tmp_path / "crafted.pt"


def _nest(depth):
    spec = {"type": "Identity"}
    for _ in range(depth):
        spec = {"type": "Sequential", "layers": [spec]}
    return spec


_ODE = lambda c: c["architecture"]["layers"][2]  # noqa: E731 - the NeuralODE block's description


@pytest.mark.parametrize("edit, field", [
    (lambda c: c.update(input_shape=[2.9]), r"input_shape\[0\] is 2.9"),
    (lambda c: c["architecture"]["layers"][1].update(approximate="evil"), r"layers\[1\]\.approximate is 'evil'"),
    (lambda c: c["architecture"]["layers"][1].update(inplace=True), r"layers\[1\] \(keys\) is \['inplace'\]"),
    (lambda c: _ODE(c)["func"]["config"].update(layers=10 ** 7), r"func\.config\.layers is 10000000"),
    (lambda c: _ODE(c)["options"].update(step_size=1e-15), r"options\['step_size'\] is 1e-15"),
    (lambda c: _ODE(c).update(method="dopri5", rtol=1e-13, options={"max_steps": 10 ** 12}), r"rtol is 1e-13"),
    (lambda c: _ODE(c).update(options={"max_steps": 10 ** 12}), r"options\['max_steps'\] is 1000000000000"),
    (lambda c: c.update(architecture=_nest(450)), "nested"),
    (lambda c: c.update(input_shape=[2 ** 20, 16]), "at most 1048576 elements"),
], ids=["fractional-shape", "gelu-approximate", "unknown-keyword", "layers", "grid", "rtol", "max_steps",
        "deep-sequential", "input-elements"])
def test_crafted_model_files_are_refused_naming_the_field(tmp_path, edit, field):
    from odegrad.export import load_model

    with pytest.raises(odegrad.errors.ExportError, match=field):
        load_model(_saved_config(tmp_path, edit))


def test_crafted_tlnode_order_and_learned_midpoint_layers_are_refused(tmp_path):
    from odegrad.export import load_model

    model = odegrad.models.TLNODE(nn.Sequential(nn.Linear(2, 2), nn.Tanh()),
                                  remainder=odegrad.solvers.LearnedMidpoint(2, hidden=4))
    with pytest.raises(odegrad.errors.ExportError, match=r"order is 1000000"):
        load_model(_saved_config(tmp_path, lambda c: c["architecture"].update(order=10 ** 6), model))
    with pytest.raises(odegrad.errors.ExportError, match=r"remainder\.layers is 10000000"):
        load_model(_saved_config(tmp_path, lambda c: c["architecture"]["remainder"].update(layers=10 ** 7), model))


def test_deeply_nested_json_in_a_saved_config_is_an_export_error(tmp_path):
    from odegrad.export import load_model

    path = _saved_config(tmp_path, lambda c: None)
    payload = torch.load(path, weights_only=True)
    payload["config"] = "[" * 100_000 + "]" * 100_000
    torch.save(payload, path)
    with pytest.raises(odegrad.errors.ExportError, match="nested too deeply"):
        load_model(path)


def test_onnx_serving_refuses_empty_batches_and_corrupted_metadata(tmp_path):
    import onnx
    from odegrad.export import MLPField, OnnxModel, to_onnx

    model = odegrad.models.NeuralODE(MLPField(2, hidden=4, layers=1), method="rk4", options={"step_size": 0.5})
    to_onnx(model, torch.randn(3, 2), tmp_path / "m.onnx")
    served = OnnxModel(tmp_path / "m.onnx")
    with pytest.raises(odegrad.errors.InvalidInput, match="non-empty batch"):
        served.predict(torch.zeros(0, 2))
    for key, value, message in (("odegrad.output_batch_axis", "x1", "output_batch_axis"),
                                ("odegrad.inputs", "{not json", "odegrad.inputs")):
        proto = onnx.load(tmp_path / "m.onnx")
        entry = next((p for p in proto.metadata_props if p.key == key), None) or proto.metadata_props.add()
        entry.key, entry.value = key, value
        onnx.save(proto, tmp_path / "bad.onnx")
        with pytest.raises(odegrad.errors.ExportError, match=message):
            OnnxModel(tmp_path / "bad.onnx").info()


# ---- export messages (item 20) -------------------------------------------------------------------

def test_random_bytes_are_not_called_pickled_objects(tmp_path):
    from odegrad.export import load_model

    path = tmp_path / "random.pt"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(odegrad.errors.ExportError, match="not a torch.save archive") as info:
        load_model(path)
    assert "pickled" not in str(info.value)


def test_onnx_input_and_output_sharing_a_name_is_refused_by_name(tmp_path):
    from odegrad.export import MLPField, to_onnx

    model = odegrad.models.NeuralODE(MLPField(2, hidden=4, layers=1), method="rk4", options={"step_size": 0.5})
    with pytest.raises(odegrad.errors.InvalidInput, match="output_name.*distinct names"):
        to_onnx(model, torch.randn(3, 2), tmp_path / "m.onnx", input_name="x", output_name="x")


# ---- export: detached times computed from the input (item 8) ---------------------------------------

class _TimesFromInput(nn.Module):
    """Integrates up to a time read off the input's values, detached (autograd cannot see it)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        end = x.detach().abs().max() + 0.5
        t = torch.stack([torch.zeros_like(end), end])
        return odegrad.odeint(lambda t, y: torch.tanh(self.lin(y)), x, t, method="rk4",
                              options={"step_size": 0.1})[-1]


@pytest.mark.parametrize("target", ["onnx", "torchscript"])
def test_export_refuses_detached_times_computed_from_the_input(tmp_path, target):
    from odegrad.export import to_onnx, to_torchscript

    export = {"onnx": to_onnx, "torchscript": to_torchscript}[target]
    with pytest.raises(odegrad.errors.ExportError, match="output times"):
        export(_TimesFromInput(), torch.randn(3, 2), tmp_path / f"m.{target}")


def test_export_names_the_example_input_when_the_model_refuses_it(tmp_path):
    from odegrad.export import MLPField, to_onnx

    model = odegrad.models.NeuralODE(MLPField(2, hidden=4, layers=1), method="rk4", options={"step_size": 0.5})
    with pytest.raises(odegrad.errors.InvalidInput, match=r"invalid example_input: got a tensor of shape \(5,\)"):
        to_onnx(model, torch.randn(5), tmp_path / "m.onnx")


def test_deeply_nested_json_in_torchscript_metadata_and_user_configs_is_an_export_error(tmp_path):
    from odegrad.export import load_torchscript, register_module, save_model

    deep = "[" * 100_000 + "]" * 100_000
    torch.jit.save(torch.jit.script(nn.Identity()), str(tmp_path / "m.pt"), _extra_files={"odegrad.json": deep})
    with pytest.raises(odegrad.errors.ExportError, match="nested too deeply"):
        load_torchscript(tmp_path / "m.pt")

    class Deep(nn.Module):
        def forward(self, t, y):
            return -y

        def export_config(self):
            config: list = []
            for _ in range(100_000):
                config = [config]
            return {"nested": config}

    register_module(Deep, "Deep_issue24")
    with pytest.raises(odegrad.errors.ExportError, match="nested too deeply"):
        save_model(odegrad.models.NeuralODE(Deep(), method="rk4", options={"step_size": 0.5}),
                   tmp_path / "deep.pt", torch.randn(2, 2))
