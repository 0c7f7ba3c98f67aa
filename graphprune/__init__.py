"""graphprune: structured pruning as a graph compiler.

Build the channel dependency graph of a model, remove the channels a policy
selects across every coupled layer, and emit a smaller dense model that is
verified against the original.
"""

from .api import PruneResult, analyse_model, fold, inspect, load, prune, run_pipeline, save
from .errors import (GraphpruneError, InputError, PlanError, ShapeError,
                     VerificationError)
from .ir import Graph, Node
from .pipeline import Pass, PassResult, Pipeline, build_pipeline

__all__ = [
    "prune", "load", "save", "inspect", "analyse_model", "PruneResult", "Graph", "Node",
    "fold", "run_pipeline", "Pass", "PassResult", "Pipeline", "build_pipeline",
    "GraphpruneError", "InputError", "ShapeError", "PlanError", "VerificationError",
]
