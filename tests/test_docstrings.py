"""Every public definition has a docstring.

Public definitions: the names in ``__all__`` of the public packages, the module-level names of the
public modules (not starting with ``_``, defined in that module), and, for every public class, the
methods and properties it defines itself. A constant has no ``__doc__`` of its own, so it counts as
documented when a string literal follows its assignment (the attribute docstring mkdocstrings
renders). A class documents its ``__init__`` arguments: each one is named in the class docstring.

``python tests/test_docstrings.py`` prints the undocumented definitions and the counts.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from functools import cache

PACKAGES = ("odegrad", "odegrad.solvers", "odegrad.gradients", "odegrad.testing", "odegrad.export")
MODULES = ("odegrad.models", "odegrad.events", "odegrad.errors", "odegrad.jet", "odegrad.testing.strategies",
           "odegrad.api", "odegrad.sde")


@cache
def attribute_docstrings(module_name: str) -> dict[str, str]:
    """Module-level assignments of ``module_name`` followed by a string literal: name -> docstring."""
    module = importlib.import_module(module_name)
    tree = ast.parse(inspect.getsource(module))
    docs: dict[str, str] = {}
    for node, following in zip(tree.body, tree.body[1:]):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) else []
        if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            for target in targets:
                if isinstance(target, ast.Name):
                    docs[target.id] = following.value.value
    return docs


@cache
def assigned_names(module_name: str) -> frozenset[str]:
    """Names assigned at module level (not imported) in ``module_name``."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    names: set[str] = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) else []
        names.update(target.id for target in targets if isinstance(target, ast.Name))
    return frozenset(names)


def submodules(package: str) -> list[str]:
    """The package and the modules in its folder (private ones included: that is where names live)."""
    module = importlib.import_module(package)
    found = [package]
    if hasattr(module, "__path__"):
        found += [f"{package}.{info.name}" for info in pkgutil.iter_modules(module.__path__)
                  if not info.ispkg and info.name not in ("strategies", "__main__")]
    return found


def constant_doc(package: str, name: str) -> str | None:
    """The attribute docstring of constant ``name``, from whichever module of ``package`` assigns it."""
    for module_name in submodules(package):
        if name in assigned_names(module_name):
            return attribute_docstrings(module_name).get(name)
    return None


def own_doc(obj: object) -> str | None:
    """``obj``'s own docstring: not inherited, and not the signature dataclasses/NamedTuple make up."""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__")
        generated = obj.__name__ + "("
        if doc and doc.startswith(generated) and (dataclasses.is_dataclass(obj) or hasattr(obj, "_fields")):
            return None
        return doc
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    return getattr(obj, "__doc__", None)


def init_args(cls: type) -> list[str]:
    """Named arguments of the ``__init__`` the class defines itself (dataclass ones included)."""
    if "__init__" not in vars(cls):
        return []
    try:
        parameters = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.name != "self"
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def class_members(qualname: str, cls: type) -> list[tuple[str, object]]:
    """Public methods and properties ``cls`` defines itself."""
    members = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod, property)) or inspect.isfunction(value) \
                or type(value).__name__ == "cached_property":
            members.append((f"{qualname}.{name}", value))
    return members


def public_definitions() -> dict[str, tuple[object, str | None]]:
    """Qualified name -> (object, its docstring or None) for every public definition."""
    found: dict[str, tuple[object, str | None]] = {}
    top_level: list[tuple[str, str, object]] = []  # (package or module, name, object)
    for package in PACKAGES:
        module = importlib.import_module(package)
        top_level += [(package, name, getattr(module, name)) for name in module.__all__]
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if name.startswith("_") or inspect.ismodule(value):
                continue
            defined_here = getattr(value, "__module__", None) == module_name if (
                inspect.isclass(value) or inspect.isfunction(value)) else name in assigned_names(module_name)
            if defined_here:
                top_level.append((module_name, name, value))
    classes: dict[type, str] = {}
    for owner, name, value in top_level:
        qualname = f"{owner}.{name}"
        if inspect.ismodule(value):
            found[qualname] = (value, value.__doc__)
        elif inspect.isclass(value) or inspect.isfunction(value):
            found[qualname] = (value, own_doc(value))
            if inspect.isclass(value):
                classes.setdefault(value, qualname)
        else:
            found[qualname] = (value, constant_doc(owner, name))
    for cls, qualname in classes.items():
        for member, value in class_members(qualname, cls):
            found[member] = (value, own_doc(value))
    return found


def undocumented_init_args() -> list[str]:
    """``Class(arg)`` for each ``__init__`` argument its class docstring does not name."""
    missing = []
    for qualname, (value, doc) in public_definitions().items():
        if inspect.isclass(value) and doc:
            missing += [f"{qualname}({arg})" for arg in init_args(value) if arg not in doc]
    return sorted(set(missing))


def undocumented() -> list[str]:
    return sorted(name for name, (_, doc) in public_definitions().items() if not (doc and doc.strip()))


def test_every_public_definition_has_a_docstring():
    definitions = public_definitions()
    assert len(definitions) > 200  # the enumeration found the packages
    missing = undocumented()
    assert not missing, f"{len(missing)} public definitions have no docstring:\n" + "\n".join(missing)


def test_every_class_docstring_names_its_init_arguments():
    missing = undocumented_init_args()
    assert not missing, "class docstrings that do not name these __init__ arguments:\n" + "\n".join(missing)


if __name__ == "__main__":
    definitions = public_definitions()
    missing = undocumented()
    print("\n".join(missing))
    print("init args not named:", *undocumented_init_args(), sep="\n  ")
    print(f"{len(missing)} of {len(definitions)} public definitions have no docstring")
