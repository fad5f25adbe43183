"""``save_model`` / ``load_model``: a model as a state dict plus a JSON description of its
architecture, read back with ``torch.load(weights_only=True)`` — nothing is unpickled and no
class is imported by a name taken from the file; only the architectures below (and classes
registered with :func:`register_module`) can be rebuilt.

Describable modules: NeuralODE, TLNODE, LearnedMidpoint, MLPField, ``nn.Sequential`` of
``nn.Linear`` and common activations, and registered classes with an ``export_config()``
method returning their JSON-able constructor arguments.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from odegrad import __version__
from odegrad.errors import ExportError, InvalidInput
from odegrad.models import TLNODE, NeuralODE
from odegrad.solvers import LearnedMidpoint

from ._fields import MLPField
from ._files import atomic_write, existing_file
from ._limits import ACTIVATION_ARGUMENTS, check_architecture, check_input_shape

FORMAT = "odegrad.model"
VERSION = 1
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16}
_ACTIVATION_CLASSES: dict[str, type[nn.Module]] = {
    "Tanh": nn.Tanh, "ReLU": nn.ReLU, "Sigmoid": nn.Sigmoid, "SiLU": nn.SiLU, "GELU": nn.GELU, "ELU": nn.ELU,
    "Identity": nn.Identity, "Softplus": nn.Softplus, "LeakyReLU": nn.LeakyReLU,
}
_ACTIVATIONS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    name: (cls, tuple(ACTIVATION_ARGUMENTS[name])) for name, cls in _ACTIVATION_CLASSES.items()}
_REGISTERED: dict[str, type[nn.Module]] = {"MLPField": MLPField}


def register_module(cls: type[nn.Module], name: str | None = None) -> type[nn.Module]:
    """Make ``cls`` saveable: instances must have ``export_config() -> dict`` of JSON-able
    constructor arguments, so ``cls(**config)`` rebuilds the architecture. Usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or not callable(getattr(cls, "export_config", None)):
        raise InvalidInput("cls", getattr(cls, "__name__", cls), "an nn.Module subclass with an export_config() method")
    _REGISTERED[name or cls.__name__] = cls
    return cls


def _json_value(where: str, value: Any) -> Any:
    if isinstance(value, Tensor) and value.dim() <= 1:
        value = value.tolist()
    if isinstance(value, (tuple, list)):
        return [_json_value(where, v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(f"{where}[{k!r}]", v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise ExportError(f"cannot save {where}={value!r}: only JSON values (numbers, strings, lists, "
                      "dicts) can be stored in a saved model's config")


def describe_module(module: nn.Module, where: str = "model") -> dict[str, Any]:
    """The JSON architecture description of ``module`` (see the module docstring)."""
    if isinstance(module, NeuralODE):
        return {"type": "NeuralODE", "func": describe_module(module.func, f"{where}.func"),
                "t": list(module.times), "method": _method_name(module.method, where),
                "gradient": _method_name(module.gradient, f"{where}.gradient"),
                "rtol": module.rtol, "atol": module.atol,
                "options": _json_value(f"{where}.options", module.options),
                "return_trajectory": module.return_trajectory}
    if isinstance(module, TLNODE):
        remainder = module.remainder
        return {"type": "TLNODE", "func": describe_module(module.func, f"{where}.func"),
                "order": module.order, "steps": module.steps, "horizon": module.horizon, "t0": module.t0,
                "remainder": None if remainder is None else describe_module(remainder, f"{where}.remainder"),
                "mode": module.solver.mode, "gradient": _method_name(module.gradient, f"{where}.gradient"),
                "backward_method": _method_name(module.backward_method, f"{where}.backward_method")}
    if isinstance(module, LearnedMidpoint):
        linears = [m for m in module.net if isinstance(m, nn.Linear)]
        return {"type": "LearnedMidpoint", "dim": module.dim, "hidden": linears[0].out_features,
                "layers": len(linears) - 1, "bounded": module.bounded}
    if isinstance(module, nn.Sequential):
        return {"type": "Sequential", "layers": [describe_module(m, f"{where}[{i}]") for i, m in enumerate(module)]}
    if type(module) is nn.Linear:
        return {"type": "Linear", "in_features": module.in_features, "out_features": module.out_features,
                "bias": module.bias is not None}
    name = type(module).__name__
    if name in _ACTIVATIONS and type(module) is _ACTIVATIONS[name][0]:
        return {"type": name, **{k: _json_value(f"{where}.{k}", getattr(module, k)) for k in _ACTIVATIONS[name][1]}}
    for registered, cls in _REGISTERED.items():
        if type(module) is cls:
            return {"type": registered, "config": _json_value(f"{where}.export_config()", module.export_config())}
    raise ExportError(f"cannot describe {where} ({name}) in a saved model: not a known architecture. "
                      "Give the class an export_config() method and call "
                      "odegrad.export.register_module(cls), or use odegrad.export.MLPField")


def _method_name(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ExportError(f"cannot save {where}={value!r}: give the method or backend by name")
    return value


def build_module(spec: Any, where: str = "config") -> nn.Module:
    """Rebuild an (untrained) module from :func:`describe_module`'s description."""
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ExportError(f"corrupted saved model: {where} is not an architecture description")
    kind = spec["type"]
    args = {k: v for k, v in spec.items() if k != "type"}
    try:
        if kind == "NeuralODE":
            func = build_module(args.pop("func"), f"{where}.func")
            return NeuralODE(func, args.pop("t"), **args)
        if kind == "TLNODE":
            func = build_module(args.pop("func"), f"{where}.func")
            remainder = args.pop("remainder")
            remainder = None if remainder is None else build_module(remainder, f"{where}.remainder")
            return TLNODE(func, remainder=remainder, **args)
        if kind == "LearnedMidpoint":
            return LearnedMidpoint(**args)
        if kind == "Sequential":
            return nn.Sequential(*(build_module(s, f"{where}[{i}]") for i, s in enumerate(args["layers"])))
        if kind == "Linear":
            return nn.Linear(**args)
        if kind in _ACTIVATIONS:
            return _ACTIVATIONS[kind][0](**args)
        if kind in _REGISTERED:
            return _REGISTERED[kind](**args["config"])
    except ExportError:
        raise
    except (TypeError, KeyError, ValueError) as error:
        raise ExportError(f"corrupted saved model: cannot rebuild {where} ({kind}): {error}") from error
    raise ExportError(f"the saved model uses architecture {kind!r} at {where}, which is not registered in "
                      "this process; call odegrad.export.register_module(cls) before loading (odegrad export, "
                      "serve-check and check: --import the module that registers it)")


def save_model(model: nn.Module, path: str | os.PathLike, example_input: Tensor) -> None:
    """Save ``model`` for ``odegrad export``: state dict + JSON architecture + input shape/dtype.

    Args:
        model: a describable model (see the module docstring).
        path: file to write (atomically).
        example_input: ``Tensor[batch, *state]``; its per-sample shape and dtype are recorded so
            the CLI can build an example input.
    """
    if not isinstance(model, nn.Module):
        raise InvalidInput("model", type(model).__name__, "a torch.nn.Module")
    if not isinstance(example_input, Tensor) or not example_input.is_floating_point() or example_input.dim() == 0:
        raise InvalidInput("example_input", example_input, "a floating-point Tensor[batch, *state]")
    dtype = str(example_input.dtype).removeprefix("torch.")
    try:
        architecture = describe_module(model)
        check_architecture(architecture)  # what load_model would refuse is not written
        config = {"architecture": architecture, "input_shape": check_input_shape("input_shape",
                                                                                 list(example_input.shape[1:])),
                  "dtype": dtype, "odegrad_version": __version__}
        text = json.dumps(config)
    except RecursionError:
        raise ExportError("cannot save the model: its config (an export_config() of a registered module?) "
                          "is nested too deeply to write as JSON") from None
    payload = {"format": FORMAT, "version": VERSION, "config": text,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Load a file written by :func:`save_model` (``torch.load(weights_only=True)``).

    Returns ``(model, config)``; the model is in eval mode, in the saved dtype, and
    ``config["input_shape"]`` / ``config["dtype"]`` describe one input sample.
    """
    source = existing_file(path, "a model saved by odegrad.export.save_model")
    with open(source, "rb") as handle:
        header = handle.read(4)
    if header != b"PK\x03\x04":  # torch.save writes zip archives
        raise ExportError(f"{source} is not a model saved by odegrad.export.save_model: not a torch.save "
                          f"archive (it starts with {header!r}, not a zip header; an .onnx or TorchScript "
                          "file, or another format?)")
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False: never do that
        raise ExportError(f"{source} holds pickled Python objects (a torch.save'd module, function or "
                          "tuple?), which odegrad refuses to load: only models written by "
                          "odegrad.export.save_model can be loaded") from None
    except Exception as error:
        raise ExportError(f"{source} is not a readable saved model (truncated or corrupted, or not "
                          f"written by odegrad.export.save_model?): {type(error).__name__}: "
                          f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ExportError(f"{source} was not written by odegrad.export.save_model (no {FORMAT!r} header)")
    if payload.get("version") != VERSION:
        raise ExportError(f"{source} has saved-model version {payload.get('version')!r}; this odegrad reads {VERSION}")
    try:
        config = json.loads(payload["config"])
        dtype = _DTYPES[config["dtype"]]
        shape = config["input_shape"]
        state_dict = payload["state_dict"]
        architecture = config["architecture"]
    except RecursionError:
        raise ExportError(f"{source} has a corrupted config: JSON nested too deeply to read") from None
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(f"{source} has a corrupted config: {type(error).__name__}: {error}") from error
    try:
        check_architecture(architecture)
        shape = check_input_shape("input_shape", shape)
    except ExportError as error:
        raise ExportError(f"{source}: {error}") from None
    _check_sizes(source, architecture, shape, state_dict)
    model = build_module(architecture).to(dtype)
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError) as error:
        raise ExportError(f"{source}: the weights do not match the saved architecture: {error}") from error
    config["input_shape"] = shape
    return model.eval(), config


def _input_width(spec: Any) -> int | None:
    """The size of the last input dimension ``spec`` accepts, where its description says it."""
    if not isinstance(spec, dict):
        return None
    kind = spec.get("type")
    if kind in ("NeuralODE", "TLNODE"):
        return _input_width(spec.get("func"))
    if kind == "Sequential" and isinstance(spec.get("layers"), list):
        return next((w for w in map(_input_width, spec["layers"]) if w is not None), None)
    if kind == "Linear":
        width = spec.get("in_features")
    elif kind == "LearnedMidpoint":
        width = spec.get("dim")
    elif kind == "MLPField" and isinstance(spec.get("config"), dict):
        width = spec["config"].get("dim")
    else:
        return None
    return width if isinstance(width, int) and not isinstance(width, bool) else None


def _check_sizes(source: Path, architecture: Any, input_shape: list[int], state_dict: Any) -> None:
    """Refuse a config whose sizes disagree with the stored tensors, before anything is allocated:
    the architecture (already within :mod:`._limits`) is built on the meta device (no memory)
    and its parameter shapes compared with the stored ones; the input shape must fit the model's
    first layer."""
    width = _input_width(architecture)
    if width is not None and (not input_shape or input_shape[-1] != width):
        raise ExportError(f"{source} has a corrupted config: input_shape {input_shape} does not end in the "
                          f"model's input width {width}")
    if not isinstance(state_dict, dict) or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise ExportError(f"{source} has a corrupted state dict: expected a dict of tensors")
    try:
        with torch.device("meta"):
            skeleton = build_module(architecture).state_dict()
    except (RuntimeError, NotImplementedError) as error:
        raise ExportError(f"{source}: cannot check the saved architecture's sizes without building it: "
                          f"{type(error).__name__}: {error}") from error
    missing, unexpected = skeleton.keys() - state_dict.keys(), state_dict.keys() - skeleton.keys()
    if missing or unexpected:
        raise ExportError(f"{source}: the weights do not match the saved architecture (missing "
                          f"{sorted(missing)}, unexpected {sorted(unexpected)})")
    for name, tensor in skeleton.items():
        if tensor.shape != state_dict[name].shape:
            raise ExportError(f"{source} has a corrupted config: it describes {name} as "
                              f"{list(tensor.shape)} but stores {list(state_dict[name].shape)}")


def example_for(config: dict[str, Any], batch: int, seed: int = 0) -> Tensor:
    """A random standard-normal input ``Tensor[batch, *input_shape]`` for a loaded model."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *config["input_shape"], generator=generator, dtype=torch.float64).to(
        _DTYPES[config["dtype"]])
