"""dead-channels: physically remove channels that contribute exactly nothing.

The lossless counterpart of pruning, for models trained with group sparsity.
It reuses the core's channel groups: a channel here is exactly what
prune-channels would remove, so removal is the same plan machinery.

A channel of an exact group is dead when either

* **its consumer columns are zero**: every contraction that reads the group is
  a Conv (``group=1``), Gemm or MatMul with a constant weight, and the
  channel's slice of every one of those weights is all zero; or
* **it does not depend on the input**: every producer of the group (Conv,
  ConvTranspose, Gemm, MatMul with constant weights) has an all-zero weight
  slice for it, so its value everywhere is a function of biases only. One
  onnxruntime run then gives its value at each contraction input. If that
  value is 0 the channel is dead outright; if it is a constant ``v`` (equal at
  every position) and every consumer is unpadded Conv or Gemm, its
  contribution ``Σ W[o, c, …] · v`` is folded into the consumer bias exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from graphprune.channels import analyse
from graphprune.channels.apply import apply_plan
from graphprune.emit.onnx import to_onnx
from graphprune.pipeline import Pass, register
from graphprune.selection import Plan, ensure_nonempty
from graphprune.verify import random_inputs, session
from graphprune.weights import release

def _consumer_columns(c, graph) -> tuple[str, int] | None:
    """The constant weight and axis through which contraction ``c`` reads a channel."""
    if c.input_index == 0 and c.weight in graph.constants and c.weight_in_axis is not None:
        return c.weight, c.weight_in_axis
    return None


def _zero_slices(analysis, group, tensor: str, axis: int) -> np.ndarray:
    """Per channel of ``group``: is the slice of constant ``tensor`` along ``axis`` all zero?

    Dense weights (no zero at all, the common case) are ruled out with one
    ``all()``; otherwise ``any`` over the other axes, without copying ``w``.
    """
    w = analysis.graph.constants[tensor]
    dense = bool(w.all())
    if dense:
        release(w)  # a mapped weight's pages leave memory once read
        return np.zeros(group.size, dtype=bool)
    did = analysis.table.ids[(tensor, axis)]
    others = tuple(a for a in range(w.ndim) if a != axis)
    nonzero = np.any(w, axis=others) if others else w != 0
    release(w)
    per_channel = np.bincount(group.channels[did], weights=nonzero, minlength=group.size)
    return per_channel == 0


def _has_zero_weights(graph) -> bool:
    """Does any weight of a contraction contain a zero? (one vectorised pass per weight)"""
    for node in graph.nodes:
        if node.op in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            w = graph.constants.get(node.input(1))
            if w is None or w.dtype.kind != "f":
                continue
            dense = bool(w.all())
            release(w)  # a mapped weight's pages leave memory once read
            if not dense:
                return True
    return False


def _foldable(node, graph) -> bool:
    """Can a constant input channel's contribution move into this node's bias exactly?"""
    if node.op == "Conv":
        return (node.attr("group", 1) == 1 and not any(node.attr("pads", []))
                and node.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID"))
    if node.op == "Gemm":
        bias = graph.constants.get(node.input(2)) if node.input(2) else None
        n_out = graph.constants[node.input(1)].shape[0 if node.attr("transB", 0) else 1]
        return not node.input(2) or (bias is not None and bias.size in (1, n_out)
                                     and (bias.ndim < 2 or bias.shape[0] == 1))
    return False


@register
@dataclass
class DeadChannels(Pass):
    name = "dead-channels"
    summary = "remove channels that contribute exactly nothing (zero weights, foldable constants)"

    def apply(self, graph) -> dict:
        if not _has_zero_weights(graph):
            return {"changed": 0}  # a dead channel needs an all-zero weight slice somewhere
        analysis = analyse(graph)
        plan = Plan(analysis)
        nodes = {n.name: n for n in graph.nodes}
        folds, constant_candidates = [], {}
        for group in analysis.prunable_groups():
            if group.approximate:
                continue
            consumers = [(c, nodes[c.node]) for c in analysis.table.contractions
                         if analysis.group_of[c.dim] == group.id]
            columns = [_consumer_columns(c, graph) for c, _ in consumers]
            dead = np.zeros(group.size, dtype=bool)
            if consumers and all(columns):
                dead = np.logical_and.reduce([_zero_slices(analysis, group, *col) for col in columns])
            free = self._input_free(analysis, group, graph) & ~dead
            if free.any() and consumers:
                constant_candidates[group.id] = (free, consumers, dead)
            else:
                plan.removed[group.id] = dead
        if constant_candidates:
            values = self._values(graph, {c.tensor for _, cons, _ in constant_candidates.values()
                                          for c, _ in cons})
            for gid, (free, consumers, dead) in constant_candidates.items():
                group = analysis.groups[gid]
                removable, group_folds = self._settle(analysis, group, free, consumers, values)
                plan.removed[gid] = dead | removable
                folds.extend(group_folds)
        for gid, mask in plan.removed.items():
            ensure_nonempty(analysis.groups[gid], mask, np.zeros(len(mask)))
        applied = self._fold_biases(graph, plan, folds)
        if not plan.channels_removed:
            return {"changed": 0}
        apply_plan(graph, plan)
        graph.remove_unused()
        return {"changed": plan.channels_removed, "biases_updated": applied,
                "groups": {int(g): int(m.sum()) for g, m in plan.removed.items() if m.any()}}

    @staticmethod
    def _input_free(analysis, group, graph) -> np.ndarray:
        """Channels whose every producer has an all-zero weight slice.

        Every contraction (as its rule recorded it) with an output axis in this
        group must produce it from the output-channel axis of a constant weight;
        any other (a batch or row axis, a dynamic weight, no weight at all)
        makes no channel input-free.
        """
        none = np.zeros(group.size, dtype=bool)
        masks = []
        for out, c in {c.anchor: c for c in analysis.table.contractions}.items():
            rank = len(graph.shape(out) or ())
            in_group = [a for a in range(rank) if analysis.table.ids.get((out, a)) in group.channels]
            if not in_group:
                continue
            if (in_group != [c.out_axis] or c.weight_out_axis is None
                    or c.weight not in graph.constants or c.tensor in graph.constants):
                return none
            masks.append(_zero_slices(analysis, group, c.weight, c.weight_out_axis))
        return np.logical_and.reduce(masks) if masks else none

    @staticmethod
    def _values(graph, tensors: set[str]) -> dict[str, np.ndarray]:
        """Run the graph once and read the given intermediate tensors."""
        model = to_onnx(graph)
        names = sorted(tensors)
        model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names
                                  if t not in {o.name for o in model.graph.output})
        sess = session(model)
        outs = sess.run(names, random_inputs(sess, seed=1))
        return dict(zip(names, outs))

    @staticmethod
    def _settle(analysis, group, free, consumers, values):
        """Of input-free channels, those that are 0, or constant with foldable consumers."""
        constant, zero = free.copy(), free.copy()
        per_consumer = []
        for c, _ in consumers:
            x = np.moveaxis(values[c.tensor], c.axis, 0).reshape(analysis.table.sizes[c.dim], -1)
            channels = group.channels[c.dim]
            varies = x.max(axis=1) != x.min(axis=1)
            constant &= np.bincount(channels, weights=varies, minlength=group.size) == 0
            zero &= np.bincount(channels, weights=np.any(x != 0, axis=1), minlength=group.size) == 0
            value = np.zeros(group.size)
            value[channels] = x[:, 0]
            per_consumer.append(value)
        # a consumer that ignores the channel (zero columns) needs no folding
        foldable = np.ones(group.size, dtype=bool)
        for c, n in consumers:
            if not _foldable(n, analysis.graph):
                col = _consumer_columns(c, analysis.graph)
                foldable &= (_zero_slices(analysis, group, *col) if col
                             else np.zeros(group.size, dtype=bool))
        removable = zero | (constant & foldable)
        if not (removable & ~zero).any():
            return removable, []
        return removable, [((c, n, v), group.id) for (c, n), v in zip(consumers, per_consumer)
                           if _foldable(n, analysis.graph)]

    @staticmethod
    def _fold_biases(graph, plan, folds) -> int:
        """bias[o] += Σ_c W[o, c, …] · v[c] over removed constant channels c."""
        applied = 0
        for (c, node, value), gid in folds:
            group = plan.analysis.groups[gid]
            removed = plan.removed[gid]
            did = plan.analysis.table.ids[(c.weight, c.weight_in_axis)]
            v = np.where(removed, value, 0.0)[group.channels[did]]
            w = graph.constants[c.weight]
            axes = list(range(w.ndim))  # Σ over every weight axis but the output channel
            contribution = np.einsum(w, axes, v.astype(w.dtype), [c.weight_in_axis], [c.weight_out_axis])
            contribution = contribution * node.attr("alpha", 1.0)  # Gemm's scale; 1 for Conv
            if not np.any(contribution):
                continue
            bias_index = 2
            if node.input(bias_index):
                bias = graph.constants[node.input(bias_index)]
                scale = node.attr("beta", 1.0) if node.op == "Gemm" else 1.0
                flat = np.broadcast_to(bias.reshape(-1), contribution.shape)
                new_bias = (flat * scale + contribution).astype(bias.dtype).reshape(
                    contribution.shape if bias.size == 1 else bias.shape)
                if node.op == "Gemm":
                    node.set_attr("beta", 1.0)
                node.inputs[bias_index] = graph.add_constant(f"{node.input(bias_index)}_folded", new_bias)
            else:
                while len(node.inputs) <= bias_index:
                    node.inputs.append("")
                node.inputs[bias_index] = graph.add_constant(f"{node.name}_bias", contribution.astype(w.dtype))
            applied += 1
        return applied
