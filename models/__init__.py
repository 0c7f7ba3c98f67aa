"""Reference model zoo: seeded random-weight models and their cached ONNX exports.

``build(name)`` gives an eval-mode torch model, ``example_input(name)`` a
matching input and ``export_onnx(name, exporter)`` a cached single-file ONNX
export of the pair. Names are ``CORE_MODELS``, the tiny test nets, the
attention blocks, or any torchvision classifier.
"""

from .attention import AttentionBlock, AttentionMLPBlock
from .detector import YoloV8Tiny, build_detector
from .dynamic import DYNAMIC_MODELS, dynamic_input_shapes, example_feeds, export_dynamic
from .export import (
    EXPORTERS,
    LEGACY_OPSET,
    MODEL_INPUT_NAME,
    MODEL_OUTPUT_NAME,
    cache_path,
    cache_root,
    export_onnx,
)
from .small import SMALL_MODELS
from .zoo import (
    CORE_MODELS,
    DEFAULT_INPUT_SHAPE,
    SEED,
    available_models,
    build,
    example_input,
    input_shape,
    randomize_batchnorm,
)

__all__ = [
    "AttentionBlock",
    "AttentionMLPBlock",
    "CORE_MODELS",
    "DYNAMIC_MODELS",
    "DEFAULT_INPUT_SHAPE",
    "EXPORTERS",
    "LEGACY_OPSET",
    "MODEL_INPUT_NAME",
    "MODEL_OUTPUT_NAME",
    "SEED",
    "SMALL_MODELS",
    "available_models",
    "build",
    "build_detector",
    "cache_path",
    "cache_root",
    "dynamic_input_shapes",
    "example_feeds",
    "example_input",
    "export_dynamic",
    "export_onnx",
    "input_shape",
    "randomize_batchnorm",
    "YoloV8Tiny",
]
