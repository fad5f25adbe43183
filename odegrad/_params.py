"""Which tensors adjoint-type backends differentiate: ``params=`` normalised, and a closure's
trainable tensors found so that they are never silently left without gradients."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
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
        owned = tuple(p for p in func.parameters() if p.requires_grad) if isinstance(func, nn.Module) else ()
        if adjoint:
            _refuse_untracked(func)
        return owned
    if isinstance(params, Tensor):
        params = (params,)
    elif isinstance(params, (str, bytes)) or not isinstance(params, Iterable):
        raise InvalidInput("params", type(params).__name__, "a Tensor or an iterable of Tensors")
    given = tuple(params)
    for i, p in enumerate(given):
        if not isinstance(p, Tensor):
            raise InvalidInput(f"params[{i}]", type(p).__name__, "a Tensor")
    chosen = tuple({id(p): p for p in given if p.requires_grad}.values())  # a tensor listed twice counts once
    if given and not chosen:
        raise InvalidInput("params", f"{len(given)} tensor(s), none with requires_grad=True",
                           "tensors that require grad (the ones to differentiate)")
    return chosen


def _refuse_untracked(func: Callable) -> None:
    """Raise if ``func`` reaches trainable tensors beyond its own registered parameters (none for a
    plain callable): adjoint-type backends would leave them without a gradient."""
    found = _untracked_shapes(func)
    if not found:
        return
    what = ("an nn.Module that also uses" if isinstance(func, nn.Module) else "not an nn.Module but uses")
    raise InvalidInput(
        "params", None, "the tensors to differentiate, e.g. params=net.parameters()",
        hint=f"func is {what} {len(found)} tensor(s) that require grad and are not its registered "
             f"parameters ({_describe(found)}); adjoint-type gradient backends differentiate only "
             "params, so these would get no gradient. Pass params=[...] listing every tensor to "
             "differentiate, register them (nn.Parameter attributes, submodules), or use gradient='direct'")


@torch.compiler.assume_constant_result
def _untracked_shapes(func: Callable) -> tuple[tuple[int, ...], ...]:
    """The shapes of the trainable tensors ``func`` reaches besides its registered parameters (all
    of them for a plain callable). A structural fact, taken as a constant by ``torch.compile``:
    traced, the search would guard on the size of the namespaces it reads (the globals of func's
    module, which every compilation in that module grows), recompiling again and again."""
    owned = {id(p) for p in func.parameters()} if isinstance(func, nn.Module) else set()
    return tuple(tuple(t.shape) for t in trainable_tensors_reachable_from(func) if id(t) not in owned)


def _describe(shapes: tuple[tuple[int, ...], ...]) -> str:
    shown = ", ".join(f"{shape}" for shape in shapes[:4])
    return "shapes " + shown + ("" if len(shapes) <= 4 else f" and {len(shapes) - 4} more")


def trainable_tensors_reachable_from(func: Any) -> list[Tensor]:
    """Tensors requiring grad (and parameters of modules) that a plain callable can reach through
    its closure, bound ``self``, defaults, ``functools.partial`` arguments and the globals it names."""
    found: dict[int, Tensor] = {}
    _search(func, found, _SEARCH_DEPTH, set())
    if isinstance(func, nn.Module):
        _search(type(func).forward, found, _SEARCH_DEPTH, set())  # the globals its forward names
    return list(found.values())


def _search(value: Any, found: dict[int, Tensor], depth: int, seen: set[int]) -> None:
    if id(value) in seen or depth < 0:
        return
    seen.add(id(value))
    if isinstance(value, Tensor):
        if value.requires_grad:
            found[id(value)] = value
    elif isinstance(value, nn.Module):
        for module in value.modules():
            for p in module.parameters(recurse=False):
                if p.requires_grad:
                    found[id(p)] = p
            for name, item in vars(module).items():
                if name not in _MODULE_INTERNALS:
                    _search_attribute(item, found, depth - 1, seen)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _search(item, found, depth - 1, seen)
    elif isinstance(value, dict):
        for item in value.values():
            _search(item, found, depth - 1, seen)
    elif isinstance(value, functools.partial):
        for item in (value.func, *value.args, *value.keywords.values()):
            _search(item, found, depth - 1, seen)
    elif callable(value):
        for item in _referenced(value):
            _search(item, found, depth - 1, seen)


_MODULE_INTERNALS = frozenset(vars(nn.Module()))
"""The attributes every nn.Module has (registries of parameters, buffers, submodules, hooks)."""


def _search_attribute(value: Any, found: dict[int, Tensor], depth: int, seen: set[int]) -> None:
    """Search a module's plain attribute: a leaf tensor that requires grad (a parameter kept
    unregistered), containers, and plain objects' attributes (a parameter reached through another
    object). Non-leaf tensors are left out: a module may keep its last output."""
    if isinstance(value, Tensor):
        if value.is_leaf and value.requires_grad:
            found[id(value)] = value
    elif isinstance(value, nn.Module):
        _search(value, found, depth, seen)
    elif isinstance(value, (list, tuple, dict)) and depth >= 0:
        for item in value.values() if isinstance(value, dict) else value:
            _search_attribute(item, found, depth - 1, seen)
    elif hasattr(value, "__dict__") and not callable(value) and not isinstance(value, type) and depth >= 0:
        if id(value) not in seen:
            seen.add(id(value))
            for item in vars(value).values():
                _search_attribute(item, found, depth - 1, seen)


def _referenced(func: Any) -> list[Any]:
    bound = getattr(func, "__self__", None)
    code = getattr(func, "__code__", None)
    if code is None:
        return [] if bound is None else [bound]
    items = [cell.cell_contents for cell in (func.__closure__ or ()) if _filled(cell)]
    items += list(func.__defaults__ or ())
    namespace = getattr(func, "__globals__", {})
    items += [namespace[name] for name in _global_names(code) if name in namespace]
    if bound is not None:
        items.append(bound)
    return items


def _global_names(code: Any) -> set[str]:
    """The global names ``code`` and the functions defined inside it (lambdas, comprehensions) use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _global_names(const)
    return names


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True
