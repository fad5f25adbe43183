"""Which tensors adjoint-type backends differentiate: ``params=`` normalised, and a closure's
trainable tensors found so that they are never silently left without gradients."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor, nn

from .errors import InvalidInput

_SEARCH_DEPTH = 3


def resolve_params(func: Callable, params: Any, adjoint: bool) -> tuple[Tensor, ...]:
    """The tensors to differentiate.

    ``params`` may be None (``func.parameters()`` for an ``nn.Module`` func), a tensor, or any
    iterable of tensors. A bare tensor that does not require grad, or an iterable none of whose
    tensors does, is refused; in an iterable, tensors that do not require grad (frozen) are
    skipped. With ``adjoint`` (a backend that only differentiates ``params``) and no ``params``,
    a plain-callable func that reaches trainable tensors (closure, bound method, globals it
    names, defaults, ``functools.partial``) is refused: they would get no gradient.
    """
    if params is None:
        if isinstance(func, nn.Module):
            return tuple(p for p in func.parameters() if p.requires_grad)
        if adjoint:
            found = trainable_tensors_reachable_from(func)
            if found:
                raise InvalidInput(
                    "params", None, "the tensors to differentiate, e.g. params=net.parameters()",
                    hint=f"func is not an nn.Module but uses {len(found)} tensor(s) that require grad "
                         f"({_describe(found)}); adjoint-type gradient backends differentiate only "
                         "params, so these would get no gradient. Pass params=..., make func an "
                         "nn.Module, or use gradient='direct'")
        return ()
    if isinstance(params, Tensor):
        params = (params,)
    elif isinstance(params, (str, bytes)) or not isinstance(params, Iterable):
        raise InvalidInput("params", type(params).__name__, "a Tensor or an iterable of Tensors")
    given = tuple(params)
    for i, p in enumerate(given):
        if not isinstance(p, Tensor):
            raise InvalidInput(f"params[{i}]", type(p).__name__, "a Tensor")
    chosen = tuple(p for p in given if p.requires_grad)
    if given and not chosen:
        raise InvalidInput("params", f"{len(given)} tensor(s), none with requires_grad=True",
                           "tensors that require grad (the ones to differentiate)")
    return chosen


def _describe(tensors: list[Tensor]) -> str:
    shown = ", ".join(f"{tuple(t.shape)}" for t in tensors[:4])
    return "shapes " + shown + ("" if len(tensors) <= 4 else f" and {len(tensors) - 4} more")


def trainable_tensors_reachable_from(func: Any) -> list[Tensor]:
    """Tensors requiring grad (and parameters of modules) that a plain callable can reach through
    its closure, bound ``self``, defaults, ``functools.partial`` arguments and the globals it names."""
    found: dict[int, Tensor] = {}
    _search(func, found, _SEARCH_DEPTH, set())
    return list(found.values())


def _search(value: Any, found: dict[int, Tensor], depth: int, seen: set[int]) -> None:
    if id(value) in seen or depth < 0:
        return
    seen.add(id(value))
    if isinstance(value, Tensor):
        if value.requires_grad:
            found[id(value)] = value
    elif isinstance(value, nn.Module):
        for p in value.parameters():
            if p.requires_grad:
                found[id(p)] = p
    elif isinstance(value, (list, tuple)):
        for item in value:
            _search(item, found, depth - 1, seen)
    elif isinstance(value, functools.partial):
        for item in (value.func, *value.args, *value.keywords.values()):
            _search(item, found, depth - 1, seen)
    elif callable(value):
        for item in _referenced(value):
            _search(item, found, depth - 1, seen)


def _referenced(func: Any) -> list[Any]:
    bound = getattr(func, "__self__", None)
    code = getattr(func, "__code__", None)
    if code is None:
        return [] if bound is None else [bound]
    items = [cell.cell_contents for cell in (func.__closure__ or ()) if _filled(cell)]
    items += list(func.__defaults__ or ())
    namespace = getattr(func, "__globals__", {})
    items += [namespace[name] for name in code.co_names if name in namespace]
    if bound is not None:
        items.append(bound)
    return items


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True
