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
    "--rtol", "nan", "--dtype", "float16", "mymodule:make", ".mymodel:make", "os:getcwd",
]), max_size=5)


@FUZZ
@given(argv=_ARGV)
def test_cli_exits_with_a_status_never_a_traceback(argv, tmp_path_factory):
    from odegrad.cli import main

    if argv[:1] == ["demo"] and not any(a in argv for a in ("--help", "x", "-1", "nan", "--version")):
        return  # a real demo run trains for tens of seconds; tests/test_tlnode.py covers it
    out = tmp_path_factory.mktemp("cli")
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
