"""Bounds on what a saved model's description may ask for, checked field by field before anything
is built or run: a crafted file must not make ``load_model``, ``odegrad export`` or ``odegrad
check`` allocate or compute without end. The limits are far beyond a legitimate model's needs.

:func:`check_architecture` walks an architecture description (``describe_module``'s JSON) and
refuses, naming the field, a value of the wrong type, an unknown keyword, a size or cost past its
limit, or nesting deeper than :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from odegrad.errors import ExportError

from ._fields import ACTIVATIONS as MLP_ACTIVATIONS

MAX_DEPTH = 32
"""Nesting of architecture descriptions (a Sequential in a Sequential ...); torch's forward
recurses once per level, and Python's recursion limit is 1000."""
MAX_LAYERS = 1024
"""Layers of one Sequential, and ``layers`` of LearnedMidpoint / MLPField."""
MAX_WIDTH = 2 ** 16
"""Features, ``dim`` and ``hidden`` of one layer."""
MAX_ORDER = 32
"""Taylor order of a TLNODE (its cost grows with the square of the order)."""
MAX_STEPS = 100_000
"""Steps of one solve a saved model may ask for: ``options['max_steps']``, a fixed-step grid, a
TLNODE's ``steps`` (odeint's default ``max_steps``)."""
MAX_TIMES = 100_000
"""Output times of a saved NeuralODE."""
MIN_RTOL = 1e-12
"""Smallest adaptive ``rtol`` of a saved NeuralODE (float64 cannot resolve much below)."""
SAMPLE_ELEMENTS = 2 ** 20
"""Elements of one input sample (4 MiB in float32)."""

Check = Callable[[str, Any], None]


def _fail(where: str, value: Any, expected: str) -> None:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise ExportError(f"corrupted or crafted saved model: {where} is {shown}; expected {expected}")


def integer(low: int, high: int) -> Check:
    """An int (not a bool) in ``[low, high]``."""
    def check(where: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            _fail(where, value, f"an integer in [{low}, {high}]")
    return check


def number(low: float = -math.inf, high: float = math.inf) -> Check:
    """A finite int or float in ``[low, high]``."""
    def check(where: str, value: Any) -> None:
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not low <= value <= high):
            _fail(where, value, f"a finite number in [{low:g}, {high:g}]")
    return check


def choice(*values: Any) -> Check:
    """One of ``values``."""
    def check(where: str, value: Any) -> None:
        if not any(value == v and type(value) is type(v) for v in values):
            _fail(where, value, "one of " + ", ".join(repr(v) for v in values))
    return check


def text(where: str, value: Any) -> None:
    """A short string (a method or backend name)."""
    if not isinstance(value, str) or len(value) > 64:
        _fail(where, value, "a name (a string of at most 64 characters)")


def flag(where: str, value: Any) -> None:
    """True or False."""
    if not isinstance(value, bool):
        _fail(where, value, "true or false")


def _times(where: str, value: Any) -> None:
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_TIMES:
        _fail(where, value, f"a list of 2 to {MAX_TIMES} times")
    for i, x in enumerate(value):
        number()(f"{where}[{i}]", x)


def _options(where: str, value: Any) -> None:
    if not isinstance(value, dict):
        _fail(where, value, "a dict of solver options")
    for key in ("max_steps", "max_num_steps"):
        if key in value:
            integer(1, MAX_STEPS)(f"{where}[{key!r}]", value[key])
    if "step_size" in value and value["step_size"] is not None:
        number(low=0.0)(f"{where}['step_size']", value["step_size"])


def _fixed_steps(where: str, spec: dict[str, Any]) -> None:
    """A NeuralODE's fixed-step grid (``step_size`` over the span of ``t``) within :data:`MAX_STEPS`."""
    step = spec.get("options", {}).get("step_size")
    times = spec.get("t")
    if step is None or not isinstance(times, list) or not times:
        return
    steps = abs(times[-1] - times[0]) / step if step > 0 else math.inf
    if steps > MAX_STEPS:
        _fail(f"{where}.options['step_size']", step, f"a step giving at most {MAX_STEPS} steps over "
              f"t = [{times[0]:g}, {times[-1]:g}] ({steps:.3g} steps)")


ACTIVATION_ARGUMENTS: dict[str, dict[str, Check]] = {
    "Tanh": {}, "ReLU": {}, "Sigmoid": {}, "SiLU": {}, "Identity": {},
    "GELU": {"approximate": choice("none", "tanh")},
    "ELU": {"alpha": number()},
    "Softplus": {"beta": number(low=1e-6), "threshold": number()},
    "LeakyReLU": {"negative_slope": number()},
}
"""The keyword arguments (and their values) each saveable activation takes."""


def _schema(kind: str, depth: int) -> dict[str, Check] | None:
    """Field checks of one architecture ``kind`` at nesting ``depth`` (None: a registered user
    class, whose config only the nesting bound covers)."""
    width, layers = integer(1, MAX_WIDTH), integer(1, MAX_LAYERS)

    def nested(where: str, value: Any) -> None:
        check_architecture(value, where, depth + 1)

    def optional_nested(where: str, value: Any) -> None:
        if value is not None:
            nested(where, value)

    def layer_list(where: str, value: Any) -> None:
        if not isinstance(value, list) or len(value) > MAX_LAYERS:
            _fail(where, value if not isinstance(value, list) else f"a list of {len(value)} layers",
                  f"a list of at most {MAX_LAYERS} layer descriptions")
        for i, layer in enumerate(value):
            nested(f"{where}[{i}]", layer)

    schemas: dict[str, dict[str, Check]] = {
        "Linear": {"in_features": width, "out_features": width, "bias": flag},
        "LearnedMidpoint": {"dim": width, "hidden": width, "layers": layers, "bounded": flag},
        "MLPField": {"config": _mlp_config},
        "TLNODE": {"func": nested, "order": integer(1, MAX_ORDER), "steps": integer(1, MAX_STEPS),
                   "horizon": number(), "t0": number(), "remainder": optional_nested, "mode": text,
                   "gradient": text, "backward_method": text},
        "NeuralODE": {"func": nested, "t": _times, "method": text, "gradient": text,
                      "rtol": number(MIN_RTOL, 1.0), "atol": number(0.0, math.inf), "options": _options,
                      "return_trajectory": flag},
        "Sequential": {"layers": layer_list},
        **ACTIVATION_ARGUMENTS,
    }
    return schemas.get(kind)


def _mlp_config(where: str, value: Any) -> None:
    fields: dict[str, Check] = {"dim": integer(1, MAX_WIDTH), "hidden": integer(1, MAX_WIDTH),
                                "layers": integer(1, MAX_LAYERS), "activation": choice(*MLP_ACTIVATIONS),
                                "time_dependent": flag}
    if not isinstance(value, dict):
        _fail(where, value, "a dict of MLPField arguments")
    _check_fields(where, value, fields)


def _check_fields(where: str, spec: dict[str, Any], fields: dict[str, Check]) -> None:
    unknown = sorted(set(spec) - set(fields) - {"type"})
    if unknown:
        _fail(f"{where} (keys)", unknown, "only " + (", ".join(sorted(fields)) or "no arguments"))
    for name, check in fields.items():
        if name in spec:
            check(f"{where}.{name}", spec[name])


def check_architecture(spec: Any, where: str = "architecture", depth: int = 0) -> None:
    """Refuse an architecture description that asks for more than the limits of this module allow
    (see the module docstring) or holds values of the wrong type, before anything is built.

    Raises:
        ExportError: naming the field, what it holds and what is expected.
    """
    if depth > MAX_DEPTH:
        _fail(where, "a description nested deeper", f"at most {MAX_DEPTH} levels of nested modules")
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        _fail(where, spec, "an architecture description (a dict with a 'type')")
    schema = _schema(spec["type"], depth)
    if schema is None:
        return
    _check_fields(where, spec, schema)
    if spec["type"] == "NeuralODE":
        _fixed_steps(where, spec)


def check_input_shape(where: str, shape: Any) -> list[int]:
    """A saved input shape: a list of ints >= 1 with at most :data:`SAMPLE_ELEMENTS` elements."""
    if not isinstance(shape, list) or len(shape) > 8:
        _fail(where, shape, "a list of at most 8 sizes")
    for i, n in enumerate(shape):
        integer(1, SAMPLE_ELEMENTS)(f"{where}[{i}]", n)
    if math.prod(shape) > SAMPLE_ELEMENTS:
        _fail(where, shape, f"at most {SAMPLE_ELEMENTS} elements per sample")
    return list(shape)
