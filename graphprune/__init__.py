"""graphprune: structured pruning as a graph compiler.

Build the channel dependency graph of a model, remove the channels a policy
selects across every coupled layer, and emit a smaller dense model that is
verified against the original.

The public names load on first use (PEP 562), so ``graphprune --help`` and
tools that only need the errors do not import onnx, onnxruntime or sympy.
"""

from .errors import (GraphpruneError, InputError, PlanError, ShapeError,
                     VerificationError)

_LAZY = {
    "prune": "api", "load": "api", "save": "api", "inspect": "api", "analyse_model": "api",
    "PruneResult": "api", "fold": "api", "run_pipeline": "api",
    "Graph": "ir", "Node": "ir",
    "Pass": "pipeline", "PassResult": "pipeline", "Pipeline": "pipeline", "build_pipeline": "pipeline",
}

__all__ = [
    "prune", "load", "save", "inspect", "analyse_model", "PruneResult", "Graph", "Node",
    "fold", "run_pipeline", "Pass", "PassResult", "Pipeline", "build_pipeline",
    "GraphpruneError", "InputError", "ShapeError", "PlanError", "VerificationError",
]


def __getattr__(name: str):
    import importlib
    import importlib.util

    module = _LAZY.get(name)
    if module is None:  # a submodule (graphprune.api, graphprune.weights, ...) not imported yet
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'graphprune' has no attribute '{name}'")
        return importlib.import_module(f".{name}", __name__)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
