"""Front ends turn a native model into the one IR (:class:`graphprune.ir.Graph`)."""

from .onnx import load_onnx

__all__ = ["load_onnx"]
