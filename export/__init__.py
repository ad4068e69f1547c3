"""HF sentence-transformers model -> ONNX (pooling + L2 norm in the graph) -> int8 / TensorRT."""
