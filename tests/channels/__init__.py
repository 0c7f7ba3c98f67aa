"""Unit tests of the per-op channel rules on tiny generated ONNX graphs."""
