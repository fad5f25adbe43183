"""Exact Python-float constants in exported ONNX graphs.

torch 2.13's ONNX exporter materialises a Python float argument — such as the Runge–Kutta weight
in ``add(y, k, alpha=h·b_i)`` or a scale in ``mul(k, 0.5)`` — as a float32 constant and then
casts it to the operand's dtype, so a float64 model loses ~1e-8 relative accuracy. These
translations (passed as ``custom_translation_table``) build the constant in float64 and
``CastLike`` it to the operand: exact for float64, correctly rounded for float32. Other
argument kinds go to onnxscript's standard translations unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import torch
from onnxscript import opset18 as op
from onnxscript.function_libs.torch_lib.ops import core

_FLOATING = (ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def _is_float(value: Any) -> bool:
    return isinstance(value, float)


def _floating(tensor: Any) -> bool:
    return getattr(tensor, "dtype", None) in _FLOATING


def _constant(value: float, like: Any) -> Any:
    return op.CastLike(op.Constant(value=ir.tensor(np.array(value, dtype=np.float64))), like)


def _scaled(other: Any, alpha: Any) -> Any:
    return other if alpha == 1 else op.Mul(other, _constant(float(alpha), other))


def aten_add(self: Any, other: Any, alpha: float = 1.0) -> Any:
    if _floating(self) and _floating(other) and _is_float(alpha):
        return op.Add(self, _scaled(other, alpha))
    return core.aten_add(self, other, alpha=alpha)


def aten_sub(self: Any, other: Any, alpha: float = 1.0) -> Any:
    if _floating(self) and _floating(other) and _is_float(alpha):
        return op.Sub(self, _scaled(other, alpha))
    return core.aten_sub(self, other, alpha=alpha)


def aten_mul(self: Any, other: Any) -> Any:
    if _floating(self) and _is_float(other):
        return op.Mul(self, _constant(other, self))
    if _floating(other) and _is_float(self):
        return op.Mul(_constant(self, other), other)
    return core.aten_mul(self, other)


def aten_div(self: Any, other: Any) -> Any:
    if _floating(self) and _is_float(other):
        return op.Div(self, _constant(other, self))
    return core.aten_div(self, other)


TRANSLATIONS = {
    torch.ops.aten.add.Tensor: aten_add,
    torch.ops.aten.sub.Tensor: aten_sub,
    torch.ops.aten.mul.Tensor: aten_mul,
    torch.ops.aten.div.Tensor: aten_div,
}
