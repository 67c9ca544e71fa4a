"""Export: verified ONNX export."""
