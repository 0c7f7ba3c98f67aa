"""Emitters write the IR back as a native model."""

from .onnx import save_onnx, to_onnx

__all__ = ["save_onnx", "to_onnx"]
