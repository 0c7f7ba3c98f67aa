"""The names of the importance criteria and repairs, in a module light enough for the CLI's
argument choices (the modules that implement them import numpy, onnx and sympy)."""

CRITERIA = ("l1", "l2")  # weight norms: graphprune.importance
TORCH_CRITERIA = ("taylor", "bn_scale")  # need the live module: graphprune.torch_importance
ACTIVATION_CRITERIA = ("activation", "fluctuation", "reconstruction")  # graphprune.activation_importance
AUTO = "auto"  # the default with calibration data: reconstruction when its Gram matrices fit
REPAIRS = ("none", "bias", "lsq")  # graphprune.repair
