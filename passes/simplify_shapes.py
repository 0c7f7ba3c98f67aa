"""simplify-shapes: fold run-time shape arithmetic that symbolic sizes decide (lossless).

``fold-constants`` folds a node when all its inputs are constants. Exports
with dynamic axes keep shape vectors at run time even where their values are
known: ``Gather(Shape(x), 2)`` of ``x: (batch, seq, 256)`` is 256 whatever the
batch; the legacy exporter writes ``expand`` as
``Where(Equal(s, -1), 1, s)``, where ``Equal`` is false entry by entry because
a size is never negative. This pass reads every shape vector with
:func:`graphprune.channels.shape_sources.shape_entries` and

* replaces a vector whose entries are all known by a constant (it remembers
  which sizes it read, as load-time folding does, so pruning stays exact);
* forwards a ``Where`` whose condition is a constant all-true or all-false
  to the branch it picks, when that branch already has the output's shape;
* removes a Reshape whose target is provably its input's own shape;
* writes a run-time Reshape/Expand target as a constant when constants can
  say the same: known entries, ``0`` (Reshape) or ``1`` (Expand) for the
  input's own size at that position, ``-1`` for one remaining entry;
* turns ``Unsqueeze(Gather(Shape(x), i), 0)`` into ``Shape(x, start=i,
  end=i+1)`` (opset 15+), one node instead of two.

Every rewrite keeps the values the model computes at every size, so the
pipeline's lossless check holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphprune.channels.shape_sources import VECTOR_OPS, shape_entries
from graphprune.pipeline import Pass, register
from graphprune.shape_folding import shape_range
from graphprune.symbolic import dims_equal

FOLDABLE = (*VECTOR_OPS, "Shape")


def _known_vector(graph, producers, node):
    """The constant value of ``node``'s output when every entry is known, else None."""
    out = node.outputs[0]
    info = graph.tensors.get(out)
    if info is None or info.dtype is None or info.shape is None or len(info.shape) > 1:
        return None, set()
    entries = shape_entries(graph, producers, out)
    if entries is None or any(e.value is None for e in entries):
        return None, set()
    if info.shape != (len(entries),) and not (info.shape == () and len(entries) == 1):
        return None, set()
    value = np.array([e.value for e in entries]).astype(info.dtype).reshape(info.shape)
    return value, set().union(*(e.reads for e in entries))


@register
@dataclass
class SimplifyShapes(Pass):
    name = "simplify-shapes"
    summary = "fold shape arithmetic that symbolic sizes decide (known sizes, Equal(size,-1), Where)"

    def apply(self, graph) -> dict:
        producers = graph.producers()
        folded = where = merged = 0
        keep = []
        for node in graph.nodes:
            if node.domain in ("", "ai.onnx") and node.op in FOLDABLE and len(node.outputs) == 1 \
                    and node.outputs[0] not in graph.outputs:
                value, reads = _known_vector(graph, producers, node)
                if value is not None:
                    graph.constants[node.outputs[0]] = value
                    if reads:
                        graph.folded[node.outputs[0]] = reads
                    folded += 1
                    continue
            keep.append(node)
        graph.nodes = keep
        for node in list(graph.nodes):
            if node.op == "Where" and node.domain in ("", "ai.onnx") and self._forward_where(graph, node):
                where += 1
        identities = self._identity_reshapes(graph, graph.producers())
        targets = self._constant_targets(graph, graph.producers())
        if graph.opset >= 15:
            merged = self._shape_slices(graph)
        graph.remove_unused()
        return {"changed": folded + where + merged + targets + identities, "folded": folded,
                "where_forwarded": where, "shape_slices": merged, "constant_targets": targets,
                "identity_reshapes": identities}

    @staticmethod
    def _identity_reshapes(graph, producers) -> int:
        """A Reshape whose target is, entry by entry, its input's own size (read at run time
        or equal to a static size), with at most one ``-1`` for the rest, changes nothing."""
        removed = 0
        for node in list(graph.nodes):
            if node.op != "Reshape" or node.domain not in ("", "ai.onnx") or not node.input(1):
                continue
            x_shape = graph.shape(node.input(0))
            entries = shape_entries(graph, producers, node.input(1))
            if x_shape is None or entries is None or len(entries) != len(x_shape):
                continue
            def own(p, e):
                if e.value is not None:
                    return isinstance(x_shape[p], int) and e.value == x_shape[p]
                src = graph.shape(e.size_of[0]) if e.size_of else None
                return src is not None and dims_equal(src[e.size_of[1]], x_shape[p])

            rest = [p for p, e in enumerate(entries) if not own(p, e)]
            if len(rest) > 1 or (rest and entries[rest[0]].value != -1):
                continue
            if graph.forward(node):
                removed += 1
        return removed

    @staticmethod
    def _constant_targets(graph, producers) -> int:
        """Run-time Reshape/Expand targets that constants can express.

        A Reshape entry that is the input's own size at that position becomes
        0 ("copy", when ``allowzero`` is off), one remaining run-time entry
        becomes -1 ("the rest"); an Expand entry that is the input's own size
        becomes 1 (broadcasting keeps it). Known entries keep their values.
        """
        rewritten = 0
        for node in graph.nodes:
            if node.op not in ("Reshape", "Expand") or node.domain not in ("", "ai.onnx") \
                    or not node.input(1) or node.input(1) in graph.constants:
                continue
            entries = shape_entries(graph, producers, node.input(1))
            x_shape = graph.shape(node.input(0))
            if entries is None or x_shape is None:
                continue
            lead = len(entries) - len(x_shape)  # Expand aligns the input to the right
            values, unknown = [], []
            for pos, e in enumerate(entries):
                if e.value is not None:
                    values.append(e.value)
                elif node.op == "Reshape" and e.size_of == (node.input(0), pos) and not node.attr("allowzero", 0):
                    values.append(0)
                elif node.op == "Expand" and e.size_of == (node.input(0), pos - lead):
                    values.append(1)
                else:
                    values.append(None)
                    unknown.append(pos)
            if node.op == "Expand" and unknown:
                continue
            if len(unknown) > 1 or (unknown and (-1 in values or node.op != "Reshape")):
                continue
            if unknown:
                values[unknown[0]] = -1
            reads = set().union(*(e.reads for e, v in zip(entries, values) if v not in (0, -1, 1) or e.value is not None))
            name = graph.add_constant(f"{node.name}_shape", np.array(values, dtype=np.int64))
            if reads:
                graph.folded[name] = reads
            node.inputs[1] = name
            rewritten += 1
        return rewritten

    @staticmethod
    def _forward_where(graph, node) -> bool:
        cond = graph.constants.get(node.input(0))
        if cond is None or cond.size == 0 or not (cond.all() or not cond.any()):
            return False
        branch = 1 if cond.all() else 2
        src, out = graph.shape(node.input(branch)), graph.shape(node.outputs[0])
        if src is None or out is None or len(src) != len(out) or not all(map(dims_equal, src, out)):
            return False
        src_info = graph.tensors.get(node.input(branch))
        out_info = graph.tensors.get(node.outputs[0])
        if node.input(branch) in graph.constants:
            if graph.constants[node.input(branch)].dtype != (out_info.dtype if out_info else None):
                return False
        elif src_info is None or out_info is None or src_info.dtype != out_info.dtype:
            return False
        return graph.forward(node, branch)

    @staticmethod
    def _shape_slices(graph) -> int:
        """``Unsqueeze(Gather(Shape(x), i), [0])`` → ``Shape(x, start=i, end=i+1)``."""
        producers = graph.producers()
        merged = 0
        for node in graph.nodes:
            if node.op != "Unsqueeze" or node.domain not in ("", "ai.onnx"):
                continue
            axes = graph.constants.get(node.input(1)) if node.input(1) else np.array(node.attr("axes", []))
            gather = producers.get(node.input(0))
            if axes is None or [int(a) for a in np.asarray(axes).reshape(-1)] not in ([0], [-1]) \
                    or gather is None or gather.op != "Gather" or gather.attr("axis", 0) != 0:
                continue
            shape_node = producers.get(gather.input(0))
            index = graph.constants.get(gather.input(1))
            if shape_node is None or shape_node.op != "Shape" or index is None or index.ndim != 0:
                continue
            rank = len(graph.shape(shape_node.input(0)) or ())
            start, end = shape_range(shape_node, rank)
            i = int(index) + (end - start if int(index) < 0 else 0) + start
            if not rank or not start <= i < end:
                continue
            node.op, node.inputs = "Shape", [shape_node.input(0)]
            node.attrs, node.raw_attrs = {"start": i, "end": i + 1}, {}
            merged += 1
        return merged
