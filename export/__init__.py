"""odegrad.export: TorchScript/ONNX export of fixed-cost models and onnxruntime serving.

``to_onnx`` / ``to_torchscript`` write validated files atomically; ``OnnxModel`` serves an
ONNX file with onnxruntime; ``save_model`` / ``load_model`` store a model as a state dict plus a
JSON config for the ``odegrad export`` command; ``serve_and_compare`` exports, serves and times
a model against eager PyTorch in one call; ``check_exported`` is ``odegrad serve-check``.
"""

from ._common import ExportResult
from ._fields import MLPField
from ._graph import GraphInfo, RolledOutTLNODE, UnrolledNeuralODE, inference_module
from ._onnx import to_onnx
from ._runtime import OnnxModel, choose_providers, load_onnx
from ._serialization import example_for, load_model, register_module, save_model
from ._serve_check import CheckReport, check_exported
from ._serving import Latency, ServeReport, measure_latency, measure_paired, serve_and_compare
from ._torchscript import load_torchscript, to_torchscript
from ._validation import Parity, Tolerance

__all__ = [
    "CheckReport", "ExportResult", "GraphInfo", "Latency", "MLPField", "OnnxModel", "Parity",
    "RolledOutTLNODE", "ServeReport", "Tolerance", "UnrolledNeuralODE", "check_exported",
    "choose_providers", "example_for", "inference_module", "load_model", "load_onnx", "load_torchscript",
    "measure_latency", "measure_paired", "register_module", "save_model", "serve_and_compare", "to_onnx",
    "to_torchscript",
]
