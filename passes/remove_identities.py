"""remove-identities: drop ops that return their input unchanged, merge reshuffle chains (lossless).

Removed (readers of the output read the input instead):

* ``Identity``; ``Dropout`` at inference (no ``training_mode`` input or a
  constant false one, mask output unused; before opset 7 only with
  ``is_test=1``);
* ``Cast``/``CastLike`` to the dtype the input already has;
* ``Reshape``/``Flatten``/``Squeeze`` whose static output shape equals the
  static input shape: these never reorder elements, so equal shapes mean
  equal tensors;
* ``Transpose`` with the identity permutation;
* ``Concat``, ``Sum``, ``Max``, ``Min``, ``Mean`` of a single input;
* ``x * 1``, ``x + 0``, ``x / 1``, ``x - 0`` with a constant of ``x``'s dtype
  that does not broadcast ``x`` to a larger shape (a norm's weight of ones);
* ``Slice`` with step 1 whose clamped ``[start, end)`` covers every sliced
  axis; ``Pad`` whose pads are all zero (any mode); ``Expand`` whose target
  broadcasts to the input's own shape (no growth).

Merged:

* ``Transpose(Transpose(x, p1), p2)`` is ``Transpose(x, c)`` with
  ``c[i] = p1[p2[i]]`` (output axis ``i`` of the pair reads axis ``p2[i]`` of
  the middle tensor, which is axis ``p1[p2[i]]`` of ``x``); when ``c`` is the
  identity the result is removed too;
* ``Reshape(Reshape(x, s1), s2)`` is one ``Reshape`` of ``x`` to the pair's
  static output shape (reshapes keep row-major order, so only the last shape
  matters); ``allowzero=1`` is set when that shape has a zero-sized axis;
* ``Unsqueeze(Unsqueeze(x, a1), a2)`` is one ``Unsqueeze`` with the axes the
  two insert, in final positions (any rank of ``x``, symbolic sizes too).

Both merges require the first node's output to have the second as its only
reader and not be a graph output, so a merge always removes a node.

Left alone (reported with the reason when the node looked like a candidate):
an op whose output is a graph output fed directly by a graph input or
constant (removing it would rename the model's interface: ``Graph.forward``
refuses); tensors read by a subgraph (their bodies name them, and renaming
would break them); anything needing a shape or value that is not static.

The sweep is topological with a rename map, so chains (``Identity`` into
``Identity``, ``Transpose`` into ``Transpose`` into ``Transpose``) collapse in
one sweep at linear cost; use counts are kept up to date as nodes go.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from onnx import helper

from graphprune.pipeline import Pass, register
from graphprune.shape_folding import overridable_constants


def _static(shape) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


class _Sweep:
    """One topological sweep over the graph: decides, rewrites and counts."""

    def __init__(self, graph):
        self.graph = graph
        self.outputs = set(graph.outputs)
        self.frozen = overridable_constants(graph)
        self.implicit = {t for n in graph.nodes for t in n.implicit_inputs}
        self.uses: Counter = Counter(t for n in graph.nodes for t in (*n.inputs, *n.implicit_inputs) if t)
        self.producers = graph.producers()
        self.rename: dict[str, str] = {}
        self.removed: set[int] = set()
        self.deferred: list = []  # no-ops whose output is a graph output: Graph.forward at the end
        self.orphans: set[str] = set()  # constants that lost a reader
        self.counts: Counter = Counter()
        self.merged: Counter = Counter()
        self.skipped: list[dict] = []

    # -- queries -----------------------------------------------------------
    def resolve(self, t: str) -> str:
        while t in self.rename:
            t = self.rename[t]
        return t

    def const(self, t: str):
        if t and t in self.graph.constants and t not in self.frozen:
            return self.graph.constants[t]
        return None

    def dtype(self, t: str):
        if t in self.graph.constants:
            return self.graph.constants[t].dtype
        info = self.graph.tensors.get(t)
        return info.dtype if info is not None else None

    def static_shape(self, t: str):
        shape = self.graph.shape(t)
        return tuple(shape) if _static(shape) else None

    def rank(self, t: str):
        shape = self.graph.shape(t)
        return len(shape) if shape is not None else None

    def sole_reader(self, t: str) -> bool:
        """``t`` is read by exactly one node, is no graph output, and no subgraph reads it."""
        return self.uses[t] == 1 and t not in self.outputs and t not in self.implicit

    # -- edits -------------------------------------------------------------
    def drop(self, node) -> None:
        self.removed.add(id(node))
        for t in node.inputs:
            if t:
                self.uses[t] -= 1
                self.orphans.add(t)

    def remove(self, node, kind: str) -> None:
        """Forward ``node``'s output to its first input (deferred if it is a graph output)."""
        out, src = node.outputs[0], node.inputs[0]
        if out in self.implicit or (out in self.outputs and src in self.implicit):
            self.skipped.append({"node": node.name, "op": node.op,
                                 "reason": "a subgraph reads the tensor that would be renamed"})
            return
        if out in self.outputs:
            self.deferred.append((node, kind))
            return
        self.drop(node)
        self.rename[out] = src
        self.uses[src] += self.uses.pop(out, 0)
        self.counts[kind] += 1

    def rewire(self, node, index: int, new: str) -> None:
        old = node.inputs[index]
        node.inputs[index] = new
        self.uses[old] -= 1
        self.uses[new] += 1
        self.orphans.add(old)

    # -- the sweep ---------------------------------------------------------
    def run(self) -> int:
        for node in self.graph.nodes:
            node.inputs = [self.resolve(t) if t else t for t in node.inputs]
            if node.domain not in ("", "ai.onnx") or not node.inputs or not node.outputs:
                continue
            merge = _MERGES.get(node.op)
            if merge is not None:
                merge(self, node)
            rule = _RULES.get(node.op)
            verdict = rule(self, node) if rule is not None else False
            if verdict is True:
                self.remove(node, node.op)
            elif isinstance(verdict, str):
                self.skipped.append({"node": node.name, "op": node.op, "reason": verdict})
        self.graph.nodes = [n for n in self.graph.nodes if id(n) not in self.removed]
        for node, kind in self.deferred:
            if self.graph.forward(node, 0):
                self.counts[kind] += 1
            else:
                self.skipped.append({"node": node.name, "op": node.op, "reason": (
                    "its output is a graph output fed directly by a graph input, constant or "
                    "another graph output; removing it would rename the model's interface")})
        used = set(self.graph.outputs) | {t for n in self.graph.nodes for t in (*n.inputs, *n.implicit_inputs)}
        for name in self.orphans - used - self.frozen:
            if self.graph.constants.pop(name, None) is not None:
                self.graph.folded.pop(name, None)
        return sum(self.counts.values()) + sum(self.merged.values())


# -- no-op rules: True = remove, False = not a no-op, str = candidate left alone (reason) --------

def _identity(s: _Sweep, node):
    return True


def _dropout(s: _Sweep, node):
    if s.graph.opset < 7 and not node.attr("is_test", 0):
        return "Dropout before opset 7 without is_test=1 runs in training mode"
    if node.input(2):
        mode = s.const(node.input(2))
        if mode is None:
            return "training_mode is a run-time input"
        if bool(np.asarray(mode).reshape(-1)[0]):
            return "training_mode is true"
    mask = node.outputs[1] if len(node.outputs) > 1 else ""
    if mask and (s.uses[mask] or mask in s.outputs):
        return "its mask output is used"
    return True


def _cast(s: _Sweep, node):
    src = s.dtype(node.inputs[0])
    return src is not None and src == np.dtype(helper.tensor_dtype_to_np_dtype(node.attr("to")))


def _cast_like(s: _Sweep, node):
    a, b = s.dtype(node.input(0)), s.dtype(node.input(1))
    return a is not None and a == b


def _same_shape(s: _Sweep, node):
    shape = s.static_shape(node.inputs[0])
    return shape is not None and shape == s.static_shape(node.outputs[0])


def _transpose(s: _Sweep, node):
    perm = node.attr("perm")
    if perm is None:
        rank = s.rank(node.inputs[0])
        return rank is not None and rank <= 1
    return list(perm) == list(range(len(perm)))


def _slice(s: _Sweep, node):
    shape = s.graph.shape(node.inputs[0])
    if shape is None:
        return False
    if s.graph.opset >= 10:
        starts, ends = s.const(node.input(1)), s.const(node.input(2))
        axes = s.const(node.input(3)) if node.input(3) else None
        steps = s.const(node.input(4)) if node.input(4) else None
        if starts is None or ends is None or (node.input(3) and axes is None) or (node.input(4) and steps is None):
            return False
    else:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    starts, ends = [int(v) for v in np.ravel(starts)], [int(v) for v in np.ravel(ends)]
    axes = list(range(len(starts))) if axes is None else [int(v) for v in np.ravel(axes)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.ravel(steps)]
    rank = len(shape)
    for axis, start, end, step in zip(axes, starts, ends, steps):
        dim = shape[axis + rank if axis < 0 else axis]
        if step != 1 or not isinstance(dim, int):
            return False
        start = min(max(start + dim if start < 0 else start, 0), dim)
        end = min(max(end + dim if end < 0 else end, 0), dim)
        if start != 0 or end != dim:
            return False
    return True


def _pad(s: _Sweep, node):
    pads = s.const(node.input(1)) if s.graph.opset >= 11 else node.attr("pads")
    return pads is not None and not np.any(np.asarray(pads))


def _expand(s: _Sweep, node):
    shape, target = s.static_shape(node.inputs[0]), s.const(node.input(1))
    if shape is None or target is None:
        return False
    try:
        return np.broadcast_shapes(shape, tuple(int(d) for d in np.ravel(target))) == shape
    except ValueError:
        return False


def _single_input(s: _Sweep, node):
    return len([t for t in node.inputs if t]) == 1


_NEUTRAL = {"Mul": (1, (0, 1)), "Add": (0, (0, 1)), "Div": (1, (1,)), "Sub": (0, (1,))}


def _neutral_operand(s: _Sweep, node):
    """``x * 1``, ``x + 0``, ``x / 1``, ``x - 0`` with a constant that broadcasting does not
    grow ``x`` by (every axis 1 or ``x``'s own static size) and ``x``'s dtype."""
    value, sides = _NEUTRAL[node.op]
    for i in sides:
        c = s.const(node.input(i))
        other = node.input(1 - i)
        shape = s.graph.shape(other)
        if c is None or c.size == 0 or shape is None or c.ndim > len(shape) or s.dtype(other) != c.dtype:
            continue
        aligned = shape[len(shape) - c.ndim:]
        if not np.all(c == value) or any(d != 1 and d != a for d, a in zip(c.shape, aligned)):
            continue
        if i == 0:  # commutative: the kept operand goes first, where removal forwards from
            node.inputs = [node.inputs[1], node.inputs[0]]
        return True
    return False


_RULES = {"Identity": _identity, **{op: _neutral_operand for op in _NEUTRAL}, "Dropout": _dropout, "Cast": _cast, "CastLike": _cast_like,
          "Reshape": _same_shape, "Flatten": _same_shape, "Squeeze": _same_shape,
          "Transpose": _transpose, "Slice": _slice, "Pad": _pad, "Expand": _expand,
          **{op: _single_input for op in ("Concat", "Sum", "Max", "Min", "Mean")}}


# -- merges: fold the producer into this node when this node is its only reader ---------------

def _chain_producer(s: _Sweep, node):
    src = node.inputs[0]
    producer = s.producers.get(src)
    if (producer is None or producer.op != node.op or producer.domain != node.domain
            or id(producer) in s.removed or not s.sole_reader(src)):
        return None
    return producer


def _merge_transposes(s: _Sweep, node) -> None:
    first = _chain_producer(s, node)
    if first is None:
        return
    x = first.inputs[0]
    p1, p2 = first.attr("perm"), node.attr("perm")
    if p1 is None:
        rank = s.rank(x)
        p1 = None if rank is None else list(reversed(range(rank)))
    if p2 is None:
        rank = s.rank(node.inputs[0])
        p2 = None if rank is None else list(reversed(range(rank)))
    if p1 is None or p2 is None or len(p1) != len(p2):
        return
    s.drop(first)
    s.rewire(node, 0, x)
    node.set_attr("perm", [int(p1[i]) for i in p2])
    s.merged["Transpose"] += 1


def _merge_reshapes(s: _Sweep, node) -> None:
    first = _chain_producer(s, node)
    final = s.static_shape(node.outputs[0])
    if first is None or final is None:
        return
    zero_sized = 0 in final
    if zero_sized and s.graph.opset < 14:
        return  # a literal 0 would mean "copy the input's dim" without allowzero
    target = np.array(final, dtype=np.int64)
    old = s.const(node.input(1))
    s.drop(first)
    s.rewire(node, 0, first.inputs[0])
    if old is None or old.shape != target.shape or not np.array_equal(old, target):
        name = s.graph.add_constant(f"{node.name}_shape", target)
        deps = set().union(*(s.graph.folded.get(t, set()) for t in (first.input(1), node.input(1))))
        if deps:
            s.graph.folded[name] = deps
        s.rewire(node, 1, name)
    if zero_sized:
        node.set_attr("allowzero", 1)
    s.merged["Reshape"] += 1


def _unsqueeze_axes(s: _Sweep, node) -> list[int] | None:
    axes = s.const(node.input(1)) if s.graph.opset >= 13 else node.attr("axes")
    return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]


def _merge_unsqueezes(s: _Sweep, node) -> None:
    """``Unsqueeze(Unsqueeze(x, a1), a2)`` is one ``Unsqueeze`` of ``x``: mark where each
    pass inserts its new axes, in order; the marks' final positions are the axes."""
    first = _chain_producer(s, node)
    if first is None:
        return
    a1, a2 = _unsqueeze_axes(s, first), _unsqueeze_axes(s, node)
    shape = s.graph.shape(first.inputs[0])
    if a1 is None or a2 is None or shape is None:
        return
    layout = [False] * len(shape)
    for axes in (a1, a2):
        rank = len(layout) + len(axes)
        for a in sorted(a % rank for a in axes):
            layout.insert(a, True)
    combined = [i for i, new in enumerate(layout) if new]
    s.drop(first)
    s.rewire(node, 0, first.inputs[0])
    if s.graph.opset >= 13:
        s.rewire(node, 1, s.graph.add_constant(f"{node.name}_axes", np.array(combined, dtype=np.int64)))
    else:
        node.set_attr("axes", combined)
    s.merged["Unsqueeze"] += 1


_MERGES = {"Transpose": _merge_transposes, "Reshape": _merge_reshapes, "Unsqueeze": _merge_unsqueezes}


@register
@dataclass
class RemoveIdentities(Pass):
    """Remove no-op ops and merge Transpose/Reshape chains, sweeping until nothing changes."""

    name = "remove-identities"
    summary = "remove Identity, inference Dropout and no-op Cast/Reshape/Transpose/Slice/Pad/Expand; merge chains"

    max_sweeps: int = 8

    def apply(self, graph) -> dict:
        removed, merged = Counter(), Counter()
        skipped: list[dict] = []
        for _ in range(self.max_sweeps):
            sweep = _Sweep(graph)
            changed = sweep.run()
            removed += sweep.counts
            merged += sweep.merged
            skipped = sweep.skipped  # what the final state leaves alone
            if not changed:
                break
        return {"changed": sum(removed.values()) + sum(merged.values()),
                "removed": dict(sorted(removed.items())), "merged": dict(sorted(merged.items())),
                "skipped": skipped}
