"""``odeint``'s ``rtol``/``atol``/``options`` turned into an :class:`IntegrationConfig`, with every
bad value refused by name."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_int, check_non_negative, check_positive
from ..errors import InvalidInput, UnknownName, UnsupportedCombination
from ._base import IntegrationConfig, Integrator
from ._controller import PIController

_CONTROLLER_OPTIONS = ("safety", "ifactor", "dfactor")
_FIXED_OPTIONS = ("step_size", "grid", "grid_constructor", "perturb", "interp")
_ADAPTIVE_OPTIONS = ("first_step", "controller", "norm", "jump_t", "step_t", "driver", "per_sample",
                     *_CONTROLLER_OPTIONS)
DRIVERS = ("auto", "eager", "traced")
"""``options['driver']`` of adaptive methods (see :class:`IntegrationConfig`)."""
_ALIASES = {"max_num_steps": "max_steps", "grid_points": "grid"}
VALID_OPTIONS = ("max_steps", "check_backward", *_FIXED_OPTIONS, *_ADAPTIVE_OPTIONS, *_ALIASES)
"""Every key ``odeint(options=...)`` accepts, aliases (``max_num_steps``, ``grid_points``) included;
``make_config`` refuses fixed-step keys for adaptive methods and the reverse."""
HALF_PRECISION_RTOL_FACTOR = 10.0
"""16-bit states: adaptive ``rtol`` must be at least this many machine epsilons. Below it an
accepted step's update rounds away (y + h·f == y) and the error estimate is roundoff, so the solve
stalls or returns a wrong answer (measured: float16 dopri5 at rtol 1e-7 gave 0.93 for e^{-1})."""


def _tolerance(name: str, value: Any, y0: Tensor | None, shapes: list[torch.Size] | None) -> float | Tensor:
    """A float, or a per-element tensor shaped like the flat state ``y0``: a tensor broadcast
    against y0's shape, or for tuple states (``shapes``) one tolerance (number or tensor
    broadcast against that part) per part, as torchdiffeq's tuple tolerances."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = float(value)
    per_part = shapes is not None and isinstance(value, (Tensor, tuple, list))
    if not isinstance(value, Tensor) and not per_part:
        return check_non_negative(name, value)
    if y0 is None:
        raise InvalidInput(name, type(value).__name__, "a number (per-element tolerances need the state)")
    if not per_part:
        return _tolerance_tensor(name, value, y0.shape, y0)
    parts = list(value)
    if len(parts) != len(shapes):
        raise InvalidInput(name, f"{len(parts)} tolerances", f"{len(shapes)}, one per state in y0")
    return torch.cat([_tolerance_tensor(f"{name}[{i}]", part, shape, y0).reshape(-1)
                      for i, (part, shape) in enumerate(zip(parts, shapes))])


def _tolerance_tensor(name: str, value: Any, shape: torch.Size, y0: Tensor) -> Tensor:
    """``value`` (a number or tensor) as a non-negative tensor of ``shape`` in y0's dtype and device."""
    if not isinstance(value, Tensor):
        value = check_non_negative(name, value)
    elif value.requires_grad:
        raise InvalidInput(name, "a tensor requiring grad", "a tolerance tensor without gradient")
    tolerance = torch.as_tensor(value, dtype=y0.dtype, device=y0.device)
    try:
        tolerance = torch.broadcast_to(tolerance, shape).contiguous()
    except RuntimeError:
        raise InvalidInput(f"{name} shape", tuple(tolerance.shape),
                           f"a shape that broadcasts to the state's {tuple(shape)}") from None
    if not bool(torch.isfinite(tolerance).all()) or bool((tolerance < 0).any()):
        raise InvalidInput(name, tolerance.tolist(), "finite non-negative tolerances")
    return tolerance


def _some_positive(rtol: float | Tensor, atol: float | Tensor) -> bool:
    """Whether ``rtol + atol > 0`` for every element; float tolerances are compared in Python, so
    no tensor value is read (``torch.compile`` traces a solve with float tolerances in one graph)."""
    if isinstance(rtol, Tensor) or isinstance(atol, Tensor):
        return bool((torch.as_tensor(rtol) + torch.as_tensor(atol) > 0).all())
    return rtol + atol > 0


def times_option(name: str, value: Any) -> list[float]:
    """A 1-D sequence (list, tuple or tensor) of finite times as floats."""
    if isinstance(value, Tensor):
        if value.dim() != 1 or not value.is_floating_point():
            raise InvalidInput(name, f"a {value.dim()}-D {value.dtype} tensor", "a 1-D tensor or list of times")
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InvalidInput(name, type(value).__name__, "a 1-D tensor or list of times")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
        raise InvalidInput(name, value, "finite numbers")
    return [float(v) for v in value]


def _canonical(options: Mapping[str, Any]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for key, value in options.items():
        if key not in VALID_OPTIONS:
            raise UnknownName("options key", key, VALID_OPTIONS)
        name = _ALIASES.get(key, key)
        if name in opts:
            raise InvalidInput(f"options['{key}']", value,
                               f"no second spelling of options['{name}'] (already given)")
        opts[name] = value
    return opts


def _check_resolution(solver: Integrator, config: IntegrationConfig, dtype: torch.dtype | None) -> None:
    if dtype is None or not solver.error_estimate or torch.finfo(dtype).bits > 16:
        return
    rtol = config.controller.scalar_tolerances()[0]
    floor = HALF_PRECISION_RTOL_FACTOR * torch.finfo(dtype).eps
    if rtol < floor:
        raise InvalidInput("rtol", rtol, f"at least {floor:.3g} for {dtype} states with an adaptive method",
                           hint=f"{dtype} resolves relative changes of only {torch.finfo(dtype).eps:.3g}; "
                                "below that the error control stalls. Pass a larger rtol, integrate "
                                "in float32, or use a fixed-step method")


def _constructed_grid(opts: Mapping[str, Any], func: Any, y0: Tensor | None, t: Tensor | None) -> list[float]:
    """The grid ``options['grid_constructor'](func, y0, t)`` returns (t in the caller's order)."""
    constructor = opts["grid_constructor"]
    for other in ("grid", "step_size"):
        if other in opts:
            raise InvalidInput("options['grid_constructor']", "given with options['" + other + "']",
                               "only one of grid_constructor, grid and step_size")
    if not callable(constructor):
        raise InvalidInput("options['grid_constructor']", constructor, "a callable (func, y0, t) -> times")
    if y0 is None or t is None:
        raise InvalidInput("options['grid_constructor']", "a callable", "a grid (here no solve to call it for)")
    with torch.no_grad():
        grid = constructor(func, y0, t.detach())
    return times_option("options['grid_constructor'] result", grid)


def make_config(solver: Integrator, rtol: Any, atol: Any, options: Mapping[str, Any] | None,
                dtype: torch.dtype | None = None, *, func: Any = None, y0: Tensor | None = None,
                t: Tensor | None = None, shapes: list[torch.Size] | None = None) -> IntegrationConfig:
    """Turn odeint's ``rtol``/``atol``/``options`` into an :class:`IntegrationConfig` for
    ``solver`` and states of ``dtype``, refusing bad values, options that do not apply to the
    solver and tolerances the dtype cannot resolve. Each group of settings is read by the part
    that owns it: the tolerances, the loop (``max_steps``, ``check_backward``, ``driver``,
    ``per_sample``), the step-size controller of adaptive methods and the grid of fixed-step ones.

    The solve's ``func``, flat ``y0`` (its dtype is the default ``dtype``), ``t`` and the tuple
    state's part ``shapes`` are needed only by per-element tolerances (tensors, one per tuple
    part) and ``options['grid_constructor']``, which is called as ``grid_constructor(func, y0, t)``
    like torchdiffeq's.
    """
    dtype = dtype or (None if y0 is None else y0.dtype)
    rtol, atol = _tolerance("rtol", rtol, y0, shapes), _tolerance("atol", atol, y0, shapes)
    if not _some_positive(rtol, atol):
        raise InvalidInput("rtol/atol", "both 0", "at least one positive tolerance (for every element)")
    opts = _options_for(solver, options)
    config = IntegrationConfig(controller=_controller(opts, rtol, atol) if solver.error_estimate
                               else PIController(rtol=rtol, atol=atol))
    _check_resolution(solver, config, dtype)
    _read_loop_options(config, opts, solver)
    if not solver.error_estimate:
        _read_grid_options(config, opts, func, y0, t)
    return config


def _options_for(solver: Integrator, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` with aliases resolved, refusing unknown keys and keys of the other kind of method."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise InvalidInput("options", type(options).__name__, "a dict of solver options")
    opts = _canonical(options)
    wrong = _FIXED_OPTIONS if solver.error_estimate else _ADAPTIVE_OPTIONS
    for key in wrong:
        if key in opts:
            kind = "adaptive" if solver.error_estimate else "fixed-step"
            valid = ", ".join(("max_steps", *(_ADAPTIVE_OPTIONS if solver.error_estimate else _FIXED_OPTIONS)))
            raise UnsupportedCombination(f"options['{key}'] does not apply to the {kind} method "
                                         f"{getattr(solver, 'name', solver)!r}; valid here: {valid}")
    return opts


def _flag(opts: Mapping[str, Any], key: str) -> bool:
    if not isinstance(opts[key], bool):
        raise InvalidInput(f"options['{key}']", opts[key], "True or False")
    return opts[key]


def _read_loop_options(config: IntegrationConfig, opts: Mapping[str, Any], solver: Integrator) -> None:
    """The integration loop's settings: ``max_steps``, ``check_backward``, ``per_sample``, ``driver``."""
    if "max_steps" in opts:
        config.max_steps = check_int("options['max_steps']", opts["max_steps"], low=1)
    if "check_backward" in opts:
        config.check_backward = _flag(opts, "check_backward")
    if "per_sample" in opts:
        config.per_sample = _flag(opts, "per_sample")
    if "driver" in opts:
        config.driver = check_choice("options['driver']", opts["driver"], DRIVERS)
        _check_driver(config, solver)


def _controller(opts: Mapping[str, Any], rtol: float | Tensor, atol: float | Tensor) -> PIController:
    """The adaptive step-size controller: odeint's tolerances, ``first_step``, ``norm``,
    ``step_t``/``jump_t`` stops and the gains of ``options['controller']`` (or its
    ``safety``/``ifactor``/``dfactor`` options)."""
    settings: dict[str, Any] = {"rtol": rtol, "atol": atol}
    if "jump_t" in opts:
        settings["jumps"] = tuple(times_option("options['jump_t']", opts["jump_t"]))
    if "step_t" in opts:
        settings["stops"] = tuple(times_option("options['step_t']", opts["step_t"]))
    if "first_step" in opts:
        settings["first_step"] = check_positive("options['first_step']", opts["first_step"])
    if "norm" in opts:
        if not callable(opts["norm"]):
            raise InvalidInput("options['norm']", opts["norm"], "a callable mapping a tensor to a scalar")
        settings["norm"] = opts["norm"]
    gains = {k: opts[k] for k in _CONTROLLER_OPTIONS if k in opts}
    if "controller" not in opts:
        return PIController(**gains, **settings)
    given = opts["controller"]
    if gains or not isinstance(given, PIController):
        raise InvalidInput("options['controller']", given,
                           "a PIController (and no separate safety/ifactor/dfactor options)")
    if not given.gains_only():
        raise InvalidInput("options['controller']", given,
                           "a PIController setting only its gains (safety, ifactor, dfactor, beta1, beta2): "
                           "pass tolerances as odeint's rtol/atol and the norm, first step and stops as "
                           "options['norm'], ['first_step'], ['step_t'], ['jump_t']")
    return replace(given, **settings)


def _read_grid_options(config: IntegrationConfig, opts: Mapping[str, Any], func: Any, y0: Tensor | None,
                       t: Tensor | None) -> None:
    """Fixed-step methods' settings: ``step_size``, ``grid`` or ``grid_constructor``, ``perturb``, ``interp``."""
    if "step_size" in opts:
        config.step_size = check_positive("options['step_size']", opts["step_size"])
    if "grid" in opts:
        config.grid = times_option("options['grid']", opts["grid"])
    if "grid_constructor" in opts:
        config.grid = _constructed_grid(opts, func, y0, t)
    if "perturb" in opts:
        config.perturb = _flag(opts, "perturb")
    if "interp" in opts:
        config.interp = check_choice("options['interp']", opts["interp"], ("cubic", "linear"))


def _check_driver(config: IntegrationConfig, solver: Integrator) -> None:
    """Refuse ``driver="traced"`` for a solver or settings the traced loop cannot run."""
    if config.driver != "traced":
        return
    from ._step_solver import StepSolver  # the step-solver layer builds on this module
    from ._traced import traced_unsupported

    if not isinstance(solver, StepSolver):
        raise UnsupportedCombination(f"options['driver'] = 'traced' needs an odegrad step solver; "
                                     f"{getattr(solver, 'name', solver)!r} integrates by itself")
    unsupported = traced_unsupported(solver, config, keep_dense=False)
    if unsupported:
        raise UnsupportedCombination(f"options['driver'] = 'traced' cannot run with {', '.join(unsupported)}: "
                                     "they need the eager driver (options['driver'] = 'eager' or 'auto')")
