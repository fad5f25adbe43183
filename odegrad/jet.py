"""Taylor-mode arithmetic: Taylor coefficients ``y_k = y^(k)(t0) / k!`` of the solution of
``dy/dt = f(t, y)``.

A :class:`Jet` is a truncated Taylor series ``Σ_k c_k s^k`` (a list of same-shaped tensors).
It implements ``__torch_function__``, so ``nn.Linear``, ``nn.Sequential``, activations and plain
user code run on it unchanged; every supported op propagates the coefficients by its recurrence
(e.g. for ``z = tanh(u)``: ``w = 1 − z²``, ``z_k = (1/k) Σ_{j=1..k} j u_j w_{k−j}``,
``w_k = −Σ_{j=0..k} z_j z_{k−j}``). The result is plain tensor code: no data-dependent control
flow, so it traces, exports (dynamic batch) and backpropagates like any other torch code.

:func:`taylor_coefficients` builds the solution's series order by order: with ``y_0..y_k`` known,
``f`` evaluated on the jet ``(t0 + s, y_0 + y_1 s + ... + y_k s^k)`` gives ``z_k`` and
``y_{k+1} = z_k / (k + 1)``. :func:`jvp_coefficients` is the fallback for functions without a
Taylor rule: nested ``torch.func.jvp`` (cost grows exponentially with the order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_int
from ._counting import CountedFunc
from .errors import TaylorModeUnsupported

TaylorFunc = Callable[[Any, Any], Any]
"""A vector field ``func(t, y)`` as Taylor mode calls it: ``t`` and ``y`` may be :class:`Jet` s."""


class _NoRule(Exception):
    """Internal: an op without a Taylor rule was applied to a Jet (turned into TaylorModeUnsupported)."""

    def __init__(self, op: str):
        self.op = op
        super().__init__(op)


class Jet:
    """A truncated Taylor series ``Σ_{k=0..K} coeffs[k] · s^k``; every coefficient has the
    shape of the value ``coeffs[0]``. Torch functions applied to a Jet return Jets."""

    __slots__ = ("coeffs",)

    def __init__(self, coeffs: Sequence[Tensor]):
        self.coeffs = list(coeffs)

    @property
    def order(self) -> int:
        """K, the highest power of s kept."""
        return len(self.coeffs) - 1

    @property
    def primal(self) -> Tensor:
        """The value ``coeffs[0]`` (the series at s = 0)."""
        return self.coeffs[0]

    shape = property(lambda self: self.coeffs[0].shape, doc="Shape of the value (and of every coefficient).")
    dtype = property(lambda self: self.coeffs[0].dtype, doc="Dtype of the value.")
    device = property(lambda self: self.coeffs[0].device, doc="Device of the value.")
    ndim = property(lambda self: self.coeffs[0].dim(), doc="Number of dimensions of the value.")

    def is_floating_point(self) -> bool:
        """Always True: a Jet carries floating-point coefficients."""
        return True

    requires_grad = property(lambda self: any(c.requires_grad for c in self.coeffs),
                             doc="Whether any coefficient requires grad.")

    def __len__(self) -> int:
        return len(self.coeffs[0])

    def __repr__(self) -> str:
        return f"Jet(order={self.order}, shape={tuple(self.shape)}, dtype={self.dtype})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        rule = _RULES.get(name)
        if rule is None:
            raise _NoRule(name)
        return rule(*args, **(kwargs or {}))

    def __getattr__(self, name: str):
        method = getattr(Tensor, name, None)
        if method is None or not callable(method):
            raise AttributeError(f"Jet has no attribute {name!r}")
        return lambda *args, **kwargs: Jet.__torch_function__(method, (Jet,), (self, *args), kwargs)

    __add__ = lambda self, other: _add(self, other)
    __radd__ = lambda self, other: _add(other, self)
    __sub__ = lambda self, other: _sub(self, other)
    __rsub__ = lambda self, other: _sub(other, self)
    __mul__ = lambda self, other: _mul(self, other)
    __rmul__ = lambda self, other: _mul(other, self)
    __truediv__ = lambda self, other: _div(self, other)
    __rtruediv__ = lambda self, other: _div(other, self)
    __matmul__ = lambda self, other: _matmul(self, other)
    __rmatmul__ = lambda self, other: _matmul(other, self)
    __pow__ = lambda self, exponent: _pow(self, exponent)
    __neg__ = lambda self: Jet([-c for c in self.coeffs])
    __pos__ = lambda self: self
    __getitem__ = lambda self, index: Jet([c[index] for c in self.coeffs])
    # conversions to Python numbers drop the series: no Taylor rule
    def __float__(self):
        raise _NoRule("float()")

    def __int__(self):
        raise _NoRule("int()")

    def __bool__(self):
        raise _NoRule("bool()")

    __index__ = __int__

    # comparisons read the value only (piecewise-constant in s)
    __gt__ = lambda self, other: self.primal > _primal(other)
    __lt__ = lambda self, other: self.primal < _primal(other)
    __ge__ = lambda self, other: self.primal >= _primal(other)
    __le__ = lambda self, other: self.primal <= _primal(other)


# ---------------------------------------------------------------------------------------------
# helpers


def _lift(value: Any, order: int, like: Jet) -> Jet:
    """A constant as a Jet (higher coefficients zero)."""
    if isinstance(value, Jet):
        return value
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    zero = torch.zeros_like(value)
    return Jet([value] + [zero] * order)


def _primal(value: Any) -> Any:
    return value.primal if isinstance(value, Jet) else value


def _first_jet(values: Sequence[Any]) -> Jet:
    return next(v for v in values if isinstance(v, Jet))


def _sum(terms: Sequence[Tensor]) -> Tensor:
    """Sum without the ``0 +`` of builtin ``sum`` (one op fewer in the autograd graph)."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _scaled(scale: float, term: Tensor) -> Tensor:
    return term if scale == 1 else term * scale


def _bilinear(op: Callable[[Tensor, Tensor], Tensor], a: Any, b: Any) -> Jet:
    """Series of ``op(a, b)`` for an op linear in each argument: Cauchy product."""
    if not isinstance(a, Jet) and not isinstance(b, Jet):
        return op(a, b)
    if not isinstance(a, Jet):
        return Jet([op(a, c) for c in b.coeffs])
    if not isinstance(b, Jet):
        return Jet([op(c, b) for c in a.coeffs])
    order = min(a.order, b.order)
    return Jet([_sum([op(a.coeffs[j], b.coeffs[k - j]) for j in range(k + 1)]) for k in range(order + 1)])


def _coefficientwise(op: Callable[..., Tensor]) -> Callable[..., Any]:
    """Rule for an op that is linear in its first argument (reshape, sum, indexing, pooling, ...)."""

    def rule(x, *args, **kwargs):
        out = [op(c, *args, **kwargs) for c in x.coeffs]
        if isinstance(out[0], (tuple, list)):  # split / chunk / unbind
            return type(out[0])(Jet(parts) for parts in zip(*out))
        return Jet(out)

    return rule


def _on_primal(op: Callable[..., Any]) -> Callable[..., Any]:
    """Rule for ops that only read the value: sizes, comparisons, ``zeros_like``..."""

    def rule(*args, **kwargs):
        args = [a.primal if isinstance(a, Jet) else a for a in args]
        return op(*args, **kwargs)

    return rule


def _sequence_op(op: Callable[..., Tensor]) -> Callable[..., Jet]:
    """cat / stack over a list mixing Jets and constant tensors."""

    def rule(tensors, *args, **kwargs):
        like = _first_jet(tensors)
        jets = [_lift(x, like.order, like) for x in tensors]
        order = min(j.order for j in jets)
        return Jet([op([j.coeffs[k] for j in jets], *args, **kwargs) for k in range(order + 1)])

    return rule


# ---------------------------------------------------------------------------------------------
# arithmetic


def _add(a: Any, b: Any, *, alpha: float = 1) -> Jet:
    if alpha != 1:
        b = _mul(b, alpha)
    if not isinstance(a, Jet):
        a, b = b, a
    if not isinstance(b, Jet):
        return Jet([a.coeffs[0] + b, *a.coeffs[1:]])
    order = min(a.order, b.order)
    return Jet([a.coeffs[k] + b.coeffs[k] for k in range(order + 1)])


def _sub(a: Any, b: Any, *, alpha: float = 1) -> Jet:
    return _add(a, _mul(b, -alpha))


def _rsub(a: Any, b: Any, *, alpha: float = 1) -> Jet:
    return _sub(b, a, alpha=alpha)


def _mul(a: Any, b: Any) -> Jet:
    return _bilinear(torch.mul, a, b)


def _reciprocal(u: Jet) -> Jet:
    """z = 1/u: z_0 = 1/u_0, z_k = −(Σ_{j=1..k} u_j z_{k−j}) / u_0."""
    inv0 = 1.0 / u.coeffs[0]
    z = [inv0]
    for k in range(1, u.order + 1):
        z.append(-_sum([u.coeffs[j] * z[k - j] for j in range(1, k + 1)]) * inv0)
    return Jet(z)


def _div(a: Any, b: Any, *, rounding_mode: str | None = None) -> Jet:
    if rounding_mode is not None:
        raise _NoRule(f"div(rounding_mode={rounding_mode!r})")
    if not isinstance(b, Jet):
        return Jet([c / b for c in a.coeffs])
    return _mul(a, _reciprocal(b)) if isinstance(a, Jet) else _mul(_reciprocal(b), a)


def _matmul(a: Any, b: Any) -> Jet:
    return _bilinear(torch.matmul, a, b)


def _linear(x: Any, weight: Any, bias: Any = None) -> Jet:
    if isinstance(x, Jet) and not isinstance(weight, Jet):
        # bias fused into the value's matmul; one matmul per coefficient (measured faster
        # forward + backward than stacking the coefficients into one matmul)
        return Jet([F.linear(x.coeffs[0], weight, bias)] + [F.linear(c, weight) for c in x.coeffs[1:]])
    out = _bilinear(F.linear, x, weight).coeffs
    return _add(Jet(out), bias) if bias is not None else Jet(out)


def _addmm(input: Any, mat1: Any, mat2: Any, *, beta: float = 1, alpha: float = 1) -> Jet:
    return _add(_mul(input, beta), _mul(_matmul(mat1, mat2), alpha))


def _conv(op: Callable[..., Tensor]) -> Callable[..., Jet]:
    def rule(x, weight, bias=None, *args, **kwargs):
        if isinstance(x, Jet) and not isinstance(weight, Jet):
            n = x.coeffs[0].shape[0] if x.coeffs[0].dim() > weight.dim() - 2 else None
            if n is not None:
                # all coefficients in one convolution, stacked along the batch dimension
                out = list(op(torch.cat(x.coeffs), weight, None, *args, **kwargs).split(n))
            else:
                out = [op(c, weight, None, *args, **kwargs) for c in x.coeffs]
        else:
            out = _bilinear(lambda u, w: op(u, w, None, *args, **kwargs), x, weight).coeffs
        if bias is None:
            return Jet(out)
        shape = (-1,) + (1,) * (out[0].dim() - (2 if out[0].dim() == weight.dim() else 1))
        return Jet([out[0] + bias.reshape(shape), *out[1:]])

    return rule


def _pow(u: Any, exponent: Any) -> Jet:
    if isinstance(exponent, Jet) or not isinstance(u, Jet):
        # a^v = exp(v log a)
        return _exp(_mul(exponent, _log(u) if isinstance(u, Jet) else torch.log(torch.as_tensor(u))))
    if isinstance(exponent, Tensor):
        raise _NoRule("pow(Jet, Tensor exponent)")
    if exponent == 0:
        return _lift(torch.ones_like(u.coeffs[0]), u.order, u)
    if isinstance(exponent, int) and 0 < exponent <= 4:
        result = u
        for _ in range(exponent - 1):
            result = _mul(result, u)
        return result
    # z = u^α: z_k = (1/(k u_0)) Σ_{j=1..k} (α j − (k − j)) u_j z_{k−j}
    u0 = u.coeffs[0]
    z = [u0 ** exponent]
    for k in range(1, u.order + 1):
        total = _sum([(exponent * j - (k - j)) * u.coeffs[j] * z[k - j] for j in range(1, k + 1)])
        z.append(total / (k * u0))
    return Jet(z)


# ---------------------------------------------------------------------------------------------
# elementwise nonlinearities: z' = g(z, u) · u' turned into coefficient recurrences


def _derivative_series(u: Jet, z0: Tensor, slope: Callable[[list[Tensor], int], Tensor]) -> Jet:
    """Series z with z' = w · u', where ``slope(z, k)`` returns w_k from z_0..z_k (the slope
    series). ``z_k = (1/k) Σ_{j=1..k} j u_j w_{k−j}``."""
    z = [z0]
    w = [slope(z, 0)]
    for k in range(1, u.order + 1):
        z.append(_scaled(1 / k, _sum([_scaled(j, u.coeffs[j]) * w[k - j] for j in range(1, k + 1)])))
        if k < u.order:
            w.append(slope(z, k))
    return Jet(z)


def _cauchy(a: list[Tensor], b: list[Tensor], k: int) -> Tensor:
    return _sum([a[j] * b[k - j] for j in range(k + 1)])


def _exp(u: Jet) -> Jet:
    return _derivative_series(u, torch.exp(u.coeffs[0]), lambda z, k: z[k])


def _log(u: Jet) -> Jet:
    """z = log u: u_0 z_k = u_k − (1/k) Σ_{j=1..k−1} j z_j u_{k−j}."""
    u0 = u.coeffs[0]
    z = [torch.log(u0)]
    for k in range(1, u.order + 1):
        acc = u.coeffs[k] - _sum([j * z[j] * u.coeffs[k - j] for j in range(1, k)]) / k if k > 1 else u.coeffs[k]
        z.append(acc / u0)
    return Jet(z)


def _tanh(u: Jet) -> Jet:
    # w = 1 − z²
    return _derivative_series(u, torch.tanh(u.coeffs[0]),
                              lambda z, k: (1 - z[0] * z[0]) if k == 0 else -_cauchy(z, z, k))


def _sigmoid(u: Jet) -> Jet:
    # w = z − z²
    return _derivative_series(u, torch.sigmoid(u.coeffs[0]), lambda z, k: z[k] - _cauchy(z, z, k))


def _softplus(u: Jet, beta: float = 1.0, threshold: float = 20.0) -> Jet:
    # z' = sigmoid(β u) u'; torch switches to the identity where β u > threshold
    s = _sigmoid(_mul(u, beta))
    z = _derivative_series(u, F.softplus(u.coeffs[0], beta, threshold), lambda _z, k: s.coeffs[k])
    linear = u.coeffs[0] * beta > threshold
    return Jet([z.coeffs[0]] + [torch.where(linear, uc, zc) for uc, zc in zip(u.coeffs[1:], z.coeffs[1:])])


def _sin_cos(u: Jet) -> tuple[Jet, Jet]:
    s, c = [torch.sin(u.coeffs[0])], [torch.cos(u.coeffs[0])]
    for k in range(1, u.order + 1):
        s.append(_scaled(1 / k, _sum([_scaled(j, u.coeffs[j]) * c[k - j] for j in range(1, k + 1)])))
        c.append(_scaled(-1 / k, _sum([_scaled(j, u.coeffs[j]) * s[k - j] for j in range(1, k + 1)])))
    return Jet(s), Jet(c)


def _piecewise(u: Jet, positive: Jet, negative: Jet) -> Jet:
    """Select per element by the sign of u_0 (exact away from the kink)."""
    mask = u.coeffs[0] > 0
    return Jet([torch.where(mask, p, n) for p, n in zip(positive.coeffs, negative.coeffs)])


def _relu(u: Jet, inplace: bool = False) -> Jet:
    return _piecewise(u, u, _mul(u, 0.0))


def _leaky_relu(u: Jet, negative_slope: float = 0.01, inplace: bool = False) -> Jet:
    return _piecewise(u, u, _mul(u, negative_slope))


def _elu(u: Jet, alpha: float = 1.0, inplace: bool = False) -> Jet:
    negative = _mul(_add(_exp(u), -1.0), alpha)
    return _piecewise(u, u, negative)


def _silu(u: Jet, inplace: bool = False) -> Jet:
    return _mul(u, _sigmoid(u))


def _abs(u: Jet) -> Jet:
    sign = torch.sign(u.coeffs[0])
    return Jet([c * sign for c in u.coeffs])


def _dropout(x: Jet, p: float = 0.5, training: bool = True, inplace: bool = False) -> Jet:
    if training and p > 0:
        raise _NoRule("dropout (training mode)")
    return x


def _where(condition: Tensor, a: Any, b: Any) -> Jet:
    like = _first_jet((a, b))
    a, b = _lift(a, like.order, like), _lift(b, like.order, like)
    return Jet([torch.where(condition, x, y) for x, y in zip(a.coeffs, b.coeffs)])


def _to(x: Jet, *args, **kwargs) -> Jet:
    return Jet([c.to(*args, **kwargs) for c in x.coeffs])


def _expand_as(x: Jet, other: Any) -> Jet:
    shape = other.shape
    return Jet([c.expand(shape) for c in x.coeffs])


def _pad(x: Jet, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Jet:
    coeffs = [F.pad(x.coeffs[0], pad, mode, value)]
    if mode != "constant" or not value:
        return Jet(coeffs + [F.pad(c, pad, mode) for c in x.coeffs[1:]])
    return Jet(coeffs + [F.pad(c, pad, mode, 0.0) for c in x.coeffs[1:]])


def _unary(fn: Callable[[Jet], Jet]) -> Callable[..., Jet]:
    return lambda u, *args, **kwargs: fn(u)


_COEFFICIENTWISE = (
    "reshape", "view", "view_as", "flatten", "unflatten", "unsqueeze", "squeeze", "transpose",
    "permute", "t", "contiguous", "expand", "repeat", "tile", "narrow", "select", "flip", "roll",
    "clone", "sum", "mean", "movedim", "split", "chunk", "unbind", "tril", "triu", "diagonal",
    "__getitem__", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "trace", "cumsum", "diff", "float", "double", "detach_copy",
)
_READ_ONLY = (
    "size", "dim", "numel", "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor",
    "zeros_like", "ones_like", "full_like", "empty_like", "gt", "lt", "ge", "le", "eq", "ne",
    "__gt__", "__lt__", "__ge__", "__le__", "__eq__", "__ne__", "sign", "isfinite", "isnan",
    "is_floating_point", "is_complex", "type_as", "get_device", "__len__",
)

_RULES: dict[str, Callable[..., Any]] = {
    **{name: _coefficientwise(getattr(Tensor, name)) for name in _COEFFICIENTWISE
       if hasattr(Tensor, name)},
    **{name: _on_primal(getattr(Tensor, name)) for name in _READ_ONLY if hasattr(Tensor, name)},
    "zeros_like": _on_primal(torch.zeros_like), "ones_like": _on_primal(torch.ones_like),
    "full_like": _on_primal(torch.full_like), "empty_like": _on_primal(torch.empty_like),
    "avg_pool2d": _coefficientwise(F.avg_pool2d), "avg_pool1d": _coefficientwise(F.avg_pool1d),
    "adaptive_avg_pool2d": _coefficientwise(F.adaptive_avg_pool2d),
    "adaptive_avg_pool1d": _coefficientwise(F.adaptive_avg_pool1d),
    "cat": _sequence_op(torch.cat), "concat": _sequence_op(torch.cat),
    "concatenate": _sequence_op(torch.cat), "stack": _sequence_op(torch.stack),
    "hstack": _sequence_op(torch.hstack), "vstack": _sequence_op(torch.vstack),
    "add": _add, "__add__": _add, "__radd__": lambda a, b: _add(b, a),
    "sub": _sub, "subtract": _sub, "__sub__": _sub, "rsub": _rsub, "__rsub__": lambda a, b: _sub(b, a),
    "mul": _mul, "multiply": _mul, "__mul__": _mul, "__rmul__": lambda a, b: _mul(b, a),
    "div": _div, "divide": _div, "true_divide": _div, "__truediv__": _div,
    "__rtruediv__": lambda a, b: _div(b, a), "__rdiv__": lambda a, b: _div(b, a),
    "matmul": _matmul, "mm": _matmul, "bmm": _matmul, "__matmul__": _matmul,
    "__rmatmul__": lambda a, b: _matmul(b, a), "linear": _linear, "addmm": _addmm,
    "conv1d": _conv(F.conv1d), "conv2d": _conv(F.conv2d), "conv3d": _conv(F.conv3d),
    "neg": _unary(lambda u: -u), "negative": _unary(lambda u: -u), "__neg__": _unary(lambda u: -u),
    "pow": _pow, "__pow__": _pow, "__rpow__": lambda a, b: _pow(b, a),
    "square": _unary(lambda u: _mul(u, u)), "sqrt": _unary(lambda u: _pow(u, 0.5)),
    "rsqrt": _unary(lambda u: _pow(u, -0.5)), "reciprocal": _unary(_reciprocal),
    "exp": _unary(_exp), "expm1": _unary(lambda u: _add(_exp(u), -1.0)),
    "log": _unary(_log), "log1p": _unary(lambda u: _log(_add(u, 1.0))),
    "tanh": _unary(_tanh), "sigmoid": _unary(_sigmoid), "softplus": _softplus,
    "sin": _unary(lambda u: _sin_cos(u)[0]), "cos": _unary(lambda u: _sin_cos(u)[1]),
    "relu": _relu, "leaky_relu": _leaky_relu, "elu": _elu, "silu": _silu, "abs": _unary(_abs),
    "dropout": _dropout, "where": _where, "to": _to, "expand_as": _expand_as, "pad": _pad,
    "identity": lambda x: x,
}


def supported_ops() -> tuple[str, ...]:
    """Names of the torch functions / Tensor methods with a Taylor-mode rule."""
    return tuple(sorted(_RULES))


# ---------------------------------------------------------------------------------------------
# Taylor coefficients of ODE solutions


def _layer_name(error: BaseException) -> str | None:
    """The innermost nn.Module whose forward was running when ``error`` was raised, named
    relative to the outermost module of the user's on the stack (odegrad's counter is skipped)."""
    names: dict[int, str] = {}
    layer = None
    tb = error.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and not isinstance(owner, CountedFunc):
            if not names:
                names = {id(m): name for name, m in owner.named_modules()}
            qualified = names.get(id(owner))
            label = type(owner).__name__
            layer = f"{qualified} ({label})" if qualified else label
        tb = tb.tb_next
    return layer


def check_order(order: Any) -> int:
    """A Taylor order: an integer >= 1."""
    return check_int("order", order, low=1)


def taylor_coefficients(func: TaylorFunc, t0: Tensor, y0: Tensor, order: int,
                        f0: Tensor | None = None) -> list[Tensor]:
    """Taylor coefficients of the solution of ``y' = func(t, y)``, ``y(t0) = y0``, by Taylor-mode
    arithmetic.

    Args:
        func: ``func(t, y)``; must use only ops with a Taylor rule (:func:`supported_ops`).
        t0: 0-dim time tensor. y0: state, any shape.
        order: highest coefficient returned (>= 1).
        f0: ``func(t0, y0)`` if already known (saves one evaluation).

    Returns:
        ``[y_0, ..., y_order]`` with ``y_k = y^(k)(t0) / k!``, each shaped like ``y0``.

    Raises:
        TaylorModeUnsupported: func applies an op without a Taylor rule (names op and layer).
    """
    order = check_order(order)
    coeffs = [y0, func(t0, y0) if f0 is None else f0]
    one, zero = torch.ones_like(t0), torch.zeros_like(t0)
    try:
        for k in range(1, order):
            t_jet = Jet([t0, one] + [zero] * (k - 1))
            z = func(t_jet, Jet(coeffs))
            if not isinstance(z, Jet):  # func ignores y and t: constant derivative
                z = Jet([torch.as_tensor(z)] + [torch.zeros_like(y0)] * k)
            coeffs.append(z.coeffs[k] / (k + 1))
    except _NoRule as error:
        raise TaylorModeUnsupported(error.op, _layer_name(error)) from None
    return coeffs


def jvp_coefficients(func: TaylorFunc, t0: Tensor, y0: Tensor, order: int,
                     f0: Tensor | None = None) -> list[Tensor]:
    """Same result as :func:`taylor_coefficients` by nested ``torch.func.jvp`` along the flow
    (works for any func torch.func can differentiate; cost grows exponentially with order).

    Returns ``[y_0, ..., y_order]`` shaped like ``y0``.
    """
    order = check_order(order)
    derivatives: list[Callable[[Tensor, Tensor], Tensor]] = [func]
    for _ in range(1, order):
        previous = derivatives[-1]

        def total_derivative(t, y, previous=previous):
            # d/ds previous(t + s, y(s)) along the flow: tangent (1, f(t, y))
            return torch.func.jvp(previous, (t, y), (torch.ones_like(t), func(t, y)))[1]

        derivatives.append(total_derivative)
    coeffs = [y0, func(t0, y0) if f0 is None else f0]
    coeffs += [d(t0, y0) / math.factorial(k + 1) for k, d in enumerate(derivatives[1:], start=1)]
    return coeffs
