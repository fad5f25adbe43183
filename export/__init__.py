"""odegrad.export: TorchScript/ONNX export of fixed-cost models and onnxruntime serving.

``to_onnx`` / ``to_torchscript`` write validated files atomically; ``OnnxModel`` serves an
ONNX file with onnxruntime; ``save_model`` / ``load_model`` store a model as a state dict plus a
JSON config for the ``odegrad export`` command; ``serve_and_compare`` exports, serves and times
a model against eager PyTorch in one call.
"""

from .common import ExportResult
from .graph import GraphInfo, UnrolledNeuralODE, inference_module
from .onnx import to_onnx
from .runtime import OnnxModel, choose_providers, load_onnx
from .validation import Parity, Tolerance

__all__ = [
    "ExportResult", "GraphInfo", "OnnxModel", "Parity", "Tolerance", "UnrolledNeuralODE",
    "choose_providers", "inference_module", "load_onnx", "to_onnx",
]
