"""odegrad.export: TorchScript/ONNX export of fixed-cost models and onnxruntime serving.

``to_onnx`` / ``to_torchscript`` write validated files atomically; ``OnnxModel`` serves an
ONNX file with onnxruntime; ``save_model`` / ``load_model`` store a model as a state dict plus a
JSON config for the ``odegrad export`` command; ``serve_and_compare`` exports, serves and times
a model against eager PyTorch in one call; ``check_exported`` is ``odegrad serve-check``.
"""

from .check import CheckReport, check_exported
from .common import ExportResult
from .fields import MLPField
from .graph import GraphInfo, RolledOutTLNODE, UnrolledNeuralODE, inference_module
from .onnx import to_onnx
from .runtime import OnnxModel, choose_providers, load_onnx
from .serialization import load_model, register_module, save_model
from .serving import Latency, ServeReport, measure_latency, measure_paired, serve_and_compare
from .torchscript import load_torchscript, to_torchscript
from .validation import Parity, Tolerance

__all__ = [
    "CheckReport", "ExportResult", "GraphInfo", "Latency", "MLPField", "OnnxModel", "Parity",
    "RolledOutTLNODE", "ServeReport", "Tolerance", "UnrolledNeuralODE", "check_exported",
    "choose_providers", "inference_module", "load_model", "load_onnx", "load_torchscript",
    "measure_latency", "measure_paired", "register_module", "save_model", "serve_and_compare", "to_onnx",
    "to_torchscript",
]
