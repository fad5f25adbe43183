"""Fuzzing the public entry points with bad and unusual inputs: only ``odegrad.errors`` exceptions
may escape, nothing may hang, and valid-but-odd inputs (empty batch, 0-d states, reverse time,
float64 t with float32 y0, tuple states) must give the right answer.

Profiles: ``HYPOTHESIS_PROFILE=ci`` (default: a few seconds) and ``dev`` (hundreds of cases per
entry point). ``ODEGRAD_FUZZ_COUNT=path`` writes how many cases each entry point tried.
"""

from __future__ import annotations

import json
import math
import os
import signal
from collections import Counter
from contextlib import contextmanager

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import odegrad
from odegrad.errors import OdegradError
from odegrad.models import TLNODE, NeuralODE
from odegrad.solvers import LearnedMidpoint

DEV = os.environ.get("HYPOTHESIS_PROFILE") == "dev"
FUZZ = settings(max_examples=400 if DEV else 40, deadline=None, derandomize=not DEV, database=None,
                suppress_health_check=list(HealthCheck))
HANG_SECONDS = 60  # hang detection only: every case here takes well under a second
TRIED: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    path = os.environ.get("ODEGRAD_FUZZ_COUNT")
    if path:
        with open(path, "w") as handle:
            json.dump(dict(TRIED), handle)


@contextmanager
def _bounded(what: str):
    """Fail (instead of hanging) when a case runs longer than HANG_SECONDS."""
    def expired(signum, frame):
        raise AssertionError(f"{what} ran longer than {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _only_odegrad_errors(what: str, call):
    """Run ``call()``; return its result, or None when it raised an odegrad error."""
    TRIED[what] += 1
    with _bounded(what):
        try:
            return call()
        except OdegradError:
            return None


def _decay(t, y):
    return -y


_TIMES = st.sampled_from([
    [0.0, 1.0], [0.0, 0.5, 1.0], [1.0, 0.0], [-0.0, 0.25], [0.0], [0.0, 0.0], [0.0, 1.0, 0.5], [],
    [[0.0, 1.0]], [0.0, math.nan], [0.0, math.inf], "ab", None, 3.0, [0, 1], [1e-300, 2e-300],
])
_STATES = st.sampled_from([
    "ones", "empty_batch", "empty", "scalar", "nan", "inf", "int", "list", "none", "half", "tuple",
    "tuple_scalar", "empty_tuple", "big_batch",
])
_METHODS = st.sampled_from(["dopri5", "tsit5", "bosh3", "rk4", "euler", "midpoint", "heun", "taylor",
                            "torchdiffeq:dopri5", "torchdiffeq:rk4", "nope", "torchdiffeq:nope", 3, None])
_GRADIENTS = st.sampled_from(["direct", "backsolve", "gq", "interp", "adjoint?", 0, None])
_TOLERANCES = st.sampled_from([1e-6, 1e-3, 0.0, -1.0, math.nan, math.inf, "1e-3", True, torch.tensor(1e-4)])
_OPTIONS = st.sampled_from([
    None, {}, {"step_size": 0.1}, {"step_size": 0.0}, {"step_size": -0.1}, {"step_size": 1e-300},
    {"step_size": "x"}, {"grid": [0.0, 0.5, 1.0]}, {"grid": []}, {"grid": ["a", "b"]}, {"grid": 0.5},
    {"grid": torch.zeros(2, 2)}, {"max_steps": 3}, {"max_steps": 0}, {"max_steps": 2.5},
    {"max_steps": 5, "max_num_steps": 100}, {"first_step": 1e-3}, {"first_step": -1.0},
    {"safety": "0.9"}, {"safety": 2.0}, {"norm": lambda x: (x, x)}, {"norm": 3}, {"jump_t": [0.5]},
    {"jump_t": "x"}, {"controller": "pi"}, {"check_backward": True}, {"check_backward": 1},
    {"unknown": 1}, [("step_size", 0.1)],
])


def _state(kind: str):
    d = torch.float64
    return {
        "ones": torch.ones(3, 2, dtype=d), "empty_batch": torch.ones(0, 2, dtype=d),
        "empty": torch.ones(0, dtype=d), "scalar": torch.tensor(1.0, dtype=d),
        "nan": torch.tensor([[math.nan, 1.0]], dtype=d), "inf": torch.tensor([math.inf], dtype=d),
        "int": torch.ones(2, dtype=torch.int64), "list": [1.0, 2.0], "none": None,
        "half": torch.ones(2, dtype=torch.float16),
        "tuple": (torch.ones(2, dtype=d), torch.ones(1, 3, dtype=d)),
        "tuple_scalar": (torch.tensor(1.0, dtype=d), torch.ones(2, dtype=d)), "empty_tuple": (),
        "big_batch": torch.ones(64, 1, dtype=d),
    }[kind]


def _field_for(y0):
    if isinstance(y0, tuple):
        return lambda t, y: tuple(-part for part in y)
    return _decay


def _exact(y0, t):
    """exp(-(t - t0)) · y0 at every output time, shaped like odeint's result."""
    t = torch.as_tensor(t, dtype=torch.float64)
    scale = torch.exp(-(t - t[0]))
    if isinstance(y0, tuple):
        return tuple(scale.view(-1, *[1] * y.dim()) * y.double() for y in y0)
    return scale.view(-1, *[1] * y0.dim()) * y0.double()


def _close(result, expected, tolerance: float) -> bool:
    if isinstance(expected, tuple):
        return all(_close(r, e, tolerance) for r, e in zip(result, expected))
    if result.shape != expected.shape or not bool(torch.isfinite(result).all()):
        return False
    return result.numel() == 0 or float((result.double() - expected).abs().max()) <= tolerance


@FUZZ
@given(state=_STATES, times=_TIMES, method=_METHODS, gradient=_GRADIENTS, rtol=_TOLERANCES,
       atol=_TOLERANCES, options=_OPTIONS)
def test_odeint_raises_only_odegrad_errors(state, times, method, gradient, rtol, atol, options):
    y0 = _state(state)
    t = times if not isinstance(times, list) else torch.tensor(times, dtype=torch.float64)
    result = _only_odegrad_errors("odeint", lambda: odegrad.odeint(
        _field_for(y0), y0, t, method=method, gradient=gradient, rtol=rtol, atol=atol, options=options))
    if result is None:
        return
    # it ran, so the inputs were valid: the result has the right shape and, where the settings
    # are accurate (adaptive, or a fixed step of 0.1), the right values
    adaptive = odegrad.get_solver(method).error_estimate
    accurate = adaptive or (options or {}).get("step_size") == 0.1
    tolerance = 0.05 if accurate else math.inf
    assert _close(result, _exact(y0, t), tolerance), (state, times, method, gradient, rtol, atol, options)


@FUZZ
@given(state=st.sampled_from(["ones", "empty_batch", "scalar", "tuple", "tuple_scalar"]),
       times=st.sampled_from([[0.0, 1.0], [1.0, 0.25, 0.0], [-0.0, 0.5], [2.0, 3.0, 4.0]]),
       method=st.sampled_from(["dopri5", "tsit5", "bosh3", "rk4", "torchdiffeq:dopri5"]),
       gradient=st.sampled_from(["direct", "backsolve", "gq", "interp"]),
       time_dtype=st.sampled_from([torch.float64, torch.float32]))
def test_valid_but_odd_inputs_give_the_right_answer_and_gradient(state, times, method, gradient, time_dtype):
    y0 = _state(state)
    parts = y0 if isinstance(y0, tuple) else (y0,)
    leaves = tuple(p.detach().float().requires_grad_() for p in parts)
    y0 = leaves if isinstance(y0, tuple) else leaves[0]
    t = torch.tensor(times, dtype=time_dtype)
    options = {"step_size": 0.05} if method == "rk4" else None
    TRIED["odeint (valid, odd)"] += 1
    with _bounded("odeint"):
        ys = odegrad.odeint(_field_for(y0), y0, t, method=method, gradient=gradient, rtol=1e-6,
                            atol=1e-8, options=options)
        assert all(y.dtype == torch.float32 for y in (ys if isinstance(ys, tuple) else (ys,)))
        assert _close(ys, _exact(y0, t), tolerance=1e-4)
        loss = sum(y[-1].sum() for y in (ys if isinstance(ys, tuple) else (ys,)))
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    decay = math.exp(-(times[-1] - times[0]))
    for g, leaf in zip(grads, leaves):
        assert g is not None and g.shape == leaf.shape
        assert torch.allclose(g, torch.full_like(leaf, decay), rtol=1e-3, atol=1e-6)


class _Field(nn.Module):
    def __init__(self, dim: int = 2):
        super().__init__()
        self.lin = nn.Linear(dim, dim).double()

    def forward(self, t, y):
        return torch.tanh(self.lin(y))


@FUZZ
@given(t=_TIMES, method=_METHODS, gradient=_GRADIENTS, options=_OPTIONS, state=_STATES,
       trajectory=st.booleans())
def test_neural_ode_raises_only_odegrad_errors(t, method, gradient, options, state, trajectory):
    def run():
        model = NeuralODE(_Field(), t=t, method=method, gradient=gradient, options=options,
                          return_trajectory=trajectory)
        return model(_state(state))

    _only_odegrad_errors("NeuralODE", run)


@FUZZ
@given(order=st.sampled_from([1, 2, 0, -1, 1.5, "1"]), steps=st.sampled_from([1, 3, 0, 2.0, 10 ** 9]),
       horizon=st.sampled_from([1.0, 0.1, 0.0, -1.0, math.inf, math.nan, "1"]),
       t0=st.sampled_from([0.0, -2.0, math.nan, "a", None]),
       remainder=st.sampled_from([None, "midpoint", "wrong_dim", 3]),
       mode=st.sampled_from(["auto", "taylor", "jvp", "fast"]),
       gradient=st.sampled_from(["direct", "backsolve", "gq", "interp", "bad"]),
       state=_STATES, intervals=st.sampled_from([None, 0, 2, -1, 1.5]))
def test_tlnode_raises_only_odegrad_errors(order, steps, horizon, t0, remainder, mode, gradient, state,
                                           intervals):
    def run():
        rem = {"midpoint": LearnedMidpoint(2).double(), "wrong_dim": LearnedMidpoint(3).double()}.get(
            remainder, remainder)
        kwargs = {} if t0 is None else {"t0": t0}
        model = TLNODE(_Field(), order=order, steps=steps, horizon=horizon, remainder=rem, mode=mode,
                       gradient=gradient, **kwargs)
        y0 = _state(state)
        return model(y0) if intervals is None else model.trajectory(y0, intervals)

    _only_odegrad_errors("TLNODE", run)


_ARGV = st.lists(st.sampled_from([
    "demo", "export", "serve-check", "check", "--help", "--version", "--iters", "0", "-1", "x",
    "/nonexistent/model.pt", "/dev/null", ".", "--format", "onnx", "torchscript", "--batch-sizes",
    "--rtol", "nan", "--dtype", "float16", "mymodule:make", ".mymodel:make", "os:getcwd", "--threads",
    "--out", "--atol", "--import", "exits_at_import",
]), max_size=5)


@FUZZ
@given(argv=_ARGV)
def test_cli_exits_with_a_status_never_a_traceback(argv, tmp_path_factory):
    from odegrad.cli import main

    if argv[:1] == ["demo"] and not any(a in argv for a in ("--help", "x", "-1", "nan", "--version", "0",
                                                            "/dev/null", "exits_at_import")):
        return  # a real demo run trains for tens of seconds; tests/test_tlnode.py covers it
    out = tmp_path_factory.mktemp("cli")
    (out / "exits_at_import.py").write_text("import sys\nsys.exit()\n")
    cwd = os.getcwd()
    TRIED["cli"] += 1
    os.chdir(out)
    try:
        with _bounded("odegrad " + " ".join(argv)):
            try:
                status = main(argv)
            except SystemExit as exit_:
                status = exit_.code
    finally:
        os.chdir(cwd)
    assert status in (0, 1, 2, None), (argv, status)


@settings(max_examples=60 if DEV else 8, deadline=None, derandomize=not DEV, database=None,
          suppress_health_check=list(HealthCheck))
@given(model=st.sampled_from(["rk4", "dopri5", "tlnode", "linear", "lambda"]),
       example=st.sampled_from(["ok", "nan", "int", "list", "wrong_dim", "scalar"]),
       target=st.sampled_from(["file", "dir", "under_file", "missing_dir"]),
       kind=st.sampled_from(["onnx", "torchscript", "save"]))
def test_export_and_save_raise_only_odegrad_errors(model, example, target, kind, tmp_path_factory):
    from odegrad.export import MLPField, load_model, save_model, to_onnx, to_torchscript

    root = tmp_path_factory.mktemp("export")
    (root / "a_file").write_text("x")
    path = {"file": root / "m.out", "dir": root, "under_file": root / "a_file" / "m.out",
            "missing_dir": root / "missing" / "m.out"}[target]
    field = MLPField(dim=2, hidden=4).double()

    def run():
        net = {"rk4": lambda: NeuralODE(field, method="rk4", options={"step_size": 0.5}),
               "dopri5": lambda: NeuralODE(field),
               "tlnode": lambda: TLNODE(field),
               "linear": lambda: nn.Linear(2, 2).double(),
               "lambda": lambda: (lambda x: x)}[model]()
        x = {"ok": torch.ones(3, 2, dtype=torch.float64), "nan": torch.full((1, 2), math.nan, dtype=torch.float64),
             "int": torch.ones(3, 2, dtype=torch.int64), "list": [[1.0, 2.0]],
             "wrong_dim": torch.ones(3, 5, dtype=torch.float64), "scalar": torch.tensor(1.0)}[example]
        if kind == "save":
            save_model(net, path, x)
            return load_model(path)
        return (to_onnx if kind == "onnx" else to_torchscript)(net, x, path)

    _only_odegrad_errors("export/save", run)


class _Unowned(nn.Module):
    """Uses a trainable tensor it does not register."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.lin = nn.Linear(2, 2).double()
        self.scale = scale

    def forward(self, t, y):
        return self.scale * torch.tanh(self.lin(y))


def _gradient_case(case: str, gradient: str):
    """One of issue 24's gradient inputs; returns (dL/dw by ``gradient``, by direct) or raises."""
    from odegrad.regularization import Kinetic

    d = torch.float64
    w = torch.tensor([[-1.0, 0.3], [0.2, -0.5]], dtype=d, requires_grad=True)
    y0, t = torch.ones(3, 2, dtype=d), torch.tensor([0.0, 0.5, 1.0], dtype=d)

    def grad(gradient_):
        w.grad = None
        if case == "twice":
            ys = odegrad.odeint(lambda tt, y: torch.tanh(y @ w.T), y0, t, gradient=gradient_, params=[w, w])
        elif case == "unowned":
            ys = odegrad.odeint(_Unowned(w), y0, t, gradient=gradient_)
        elif case == "double_backward":
            ys = odegrad.odeint(lambda tt, y: torch.tanh(y @ w.T), y0, t, gradient=gradient_, params=w)
            (g,) = torch.autograd.grad(ys.sum(), w, create_graph=True)
            return torch.autograd.grad(g.pow(2).sum(), w)[0]
        elif case == "non_leaf":
            m = 2 * w
            ys = odegrad.odeint(lambda tt, y: y @ m.T, y0, t, gradient=gradient_, params=[w])
        elif case == "float64_output":
            ys = odegrad.odeint(lambda tt, y: torch.tanh(y @ w.T.float()).double(), y0.float(), t.float(),
                                gradient=gradient_, params=[w])
        elif case == "jump":
            ys = odegrad.odeint(lambda tt, y: torch.tanh(y @ w.T) * torch.where(tt < 0.3, 1.0, -1.0), y0, t,
                                gradient=gradient_, params=w, options={"jump_t": [0.3]})
        elif case == "kinetic_tuple":
            sol = odegrad.solve(lambda tt, y: (torch.tanh(y[0] @ w.T), -y[1]), (y0, y0[:, :1]), t,
                                gradient=gradient_, params=w, regularization=Kinetic(jacobian=0.0))
            return torch.autograd.grad(sol.regularization, w)[0]
        return torch.autograd.grad(ys.sum(), w)[0]

    return grad(gradient), grad("direct")


@FUZZ
@given(case=st.sampled_from(["twice", "unowned", "double_backward", "non_leaf", "float64_output", "jump",
                             "kinetic_tuple"]),
       gradient=st.sampled_from(["backsolve", "gq", "interp"]))
def test_gradient_inputs_give_the_direct_gradient_or_an_odegrad_error(case, gradient):
    result = _only_odegrad_errors("gradients", lambda: _gradient_case(case, gradient))
    if result is not None:
        got, expected = result
        assert torch.allclose(got.double(), expected.double(), rtol=1e-3, atol=1e-5), (case, gradient)


_NAN = float("nan")


@FUZZ
@given(event=st.sampled_from(["nan", "nan_later", "never", "fires"]),
       field=st.sampled_from(["decay", "still", "oscillating"]),
       span=st.sampled_from([[0.0], [0.0, 2.0], [0.0, -1.0]]),
       evaluate=st.sampled_from([None, [], [0.5], [[0.1, 0.2]]]))
def test_events_and_dense_output_raise_only_odegrad_errors(event, field, span, evaluate):
    d = torch.float64
    fn = {"nan": lambda t, y: y[0] * _NAN,
          "nan_later": lambda t, y: torch.where(t.abs() < 0.5, y[0] + 2.0, torch.full((), _NAN, dtype=d)),
          "never": lambda t, y: y[0] + 2.0, "fires": lambda t, y: y[0] - 0.5}[event]
    func = {"decay": _decay, "still": lambda t, y: torch.zeros_like(y),
            "oscillating": lambda t, y: torch.sin(20 * t) * y}[field]

    def run():
        et, ys = odegrad.odeint(func, torch.ones(2, dtype=d), torch.tensor(span, dtype=d), event_fn=fn,
                                options={"max_steps": 500})
        assert math.isfinite(float(et)) and bool(torch.isfinite(ys).all())
        if evaluate is not None:
            sol = odegrad.solve(func, torch.ones(2, dtype=d), torch.tensor([0.0, 1.0], dtype=d), dense=True)
            out = sol.evaluate(torch.tensor(evaluate, dtype=d))
            assert out.shape == (*torch.tensor(evaluate).shape, 2)

    _only_odegrad_errors("events/dense", run)


def _crafted_file(root, edit: str):
    from odegrad.export import MLPField, save_model

    path = root / "m.pt"
    if edit == "random_bytes":
        path.write_bytes(bytes(range(256)) * 8)
        return path
    model = nn.Sequential(nn.Linear(2, 3), nn.GELU(), TLNODE(MLPField(3, hidden=4, layers=1)), nn.Linear(3, 1))
    save_model(model, path, torch.randn(2, 2))
    payload = torch.load(path, weights_only=True)
    config = json.loads(payload["config"])
    arch = config["architecture"]
    nested = {"type": "Identity"}
    for _ in range(450):
        nested = {"type": "Sequential", "layers": [nested]}
    {"input_shape": lambda: config.update(input_shape=[2.9]),
     "huge_input": lambda: config.update(input_shape=[2 ** 20, 16]),
     "gelu": lambda: arch["layers"][1].update(approximate="evil"),
     "keyword": lambda: arch["layers"][1].update(inplace=True),
     "layers": lambda: arch["layers"][2]["func"]["config"].update(layers=10 ** 7),
     "order": lambda: arch["layers"][2].update(order=10 ** 6),
     "deep": lambda: config.update(architecture=nested),
     "valid": lambda: None, "deep_json": lambda: None}[edit]()
    payload["config"] = "[" * 50_000 + "]" * 50_000 if edit == "deep_json" else json.dumps(config)
    torch.save(payload, path)
    return path


@settings(max_examples=40 if DEV else 10, deadline=None, derandomize=not DEV, database=None,
          suppress_health_check=list(HealthCheck))
@given(edit=st.sampled_from(["input_shape", "huge_input", "gelu", "keyword", "layers", "order", "deep",
                             "deep_json", "random_bytes", "valid"]))
def test_crafted_model_files_raise_only_odegrad_errors(edit, tmp_path_factory):
    from odegrad.export import load_model

    path = _crafted_file(tmp_path_factory.mktemp("crafted"), edit)
    loaded = _only_odegrad_errors("crafted files", lambda: load_model(path))
    assert (loaded is not None) == (edit == "valid"), edit
