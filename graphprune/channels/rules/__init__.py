"""The rule table: one small coupling function per op, written once for all front ends.

A rule ``couple(ctx)`` states how a node's axes are tied (see
:mod:`graphprune.channels.dims`); an optional ``emit(ctx)`` updates whatever
the node carries that depends on sizes (conv ``group``, reshape targets, split
sizes, slice bounds) once a plan is known. Adding an op = adding a rule here
and a test in ``tests/channels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

RULES: dict[str, "Rule"] = {}


@dataclass
class Rule:
    couple: Callable
    emit: Optional[Callable] = None


def rule(*ops: str):
    """Register ``fn`` as the coupling rule of ``ops`` (default ONNX domain)."""
    def register(fn):
        for op in ops:
            RULES[op] = Rule(fn)
        return fn
    return register


def emitter(*ops: str):
    """Register ``fn`` as the size-update hook of ``ops`` (their rule must exist)."""
    def register(fn):
        for op in ops:
            RULES[op].emit = fn
        return fn
    return register


def rule_for(op: str, domain: str = "") -> Optional[Rule]:
    if domain not in ("", "ai.onnx"):
        return None
    return RULES.get(op)


from . import conv, elementwise, layout, linear, norm, pool  # noqa: E402,F401  (registration)
from . import grouped  # noqa: E402,F401  (registration: GroupedMatMul, the torch path's MoE experts)
from . import recurrent  # noqa: E402,F401  (registration: LSTM, GRU, RNN)
from . import windows  # noqa: E402,F401  (registration: the torch path's unfold, fold, Tensor.unfold)
