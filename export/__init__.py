"""odegrad.export: TorchScript/ONNX export of fixed-cost models and onnxruntime serving."""
