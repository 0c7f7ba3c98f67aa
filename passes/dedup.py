"""dedup: merge identical constants and identical nodes (lossless).

Constants: two constants are identical when dtype, shape and bytes are equal
(bytes, not values: ``-0.0`` and ``0.0`` differ, and so do NaN payloads,
so a merge is always exact). Candidates are bucketed by
``(dtype, shape, nbytes)`` and only buckets with two or more members are
fingerprinted by 64 strided elements; only fingerprint collisions are hashed
(BLAKE2) and then confirmed byte for byte, so the cost is one hash per likely
duplicate, not a comparison per pair nor a hash of every weight. The first name in the graph's
order is kept and every reader of a duplicate reads it instead. Constants
derived from tensor sizes (``Graph.folded``) only merge with constants
derived from the same tensors, so the pruner's record of what a value
depends on stays exact.

Nodes (common subexpression elimination): two nodes compute the same value
when op, domain, attributes (compared by their encoding) and input names are
equal and the same outputs are present. Nodes are visited in topological
order and a merged node's readers are renamed before later nodes are keyed,
so ``f(g(x))`` computed twice collapses to one chain in a single sweep.

Left alone, and why:

* nondeterministic ops (``RandomNormal``, ``Bernoulli``, ``Dropout``...): two
  draws are two different values;
* nodes with subgraph attributes (``If``, ``Loop``, ``Scan``): their bodies
  are not compared, and they read outer names implicitly;
* ops outside the ONNX domains (a custom op may have state or side effects);
* duplicates whose outputs are graph outputs (both names are the model's
  interface) or are read by a subgraph (the body names them); constants that
  are graph outputs, read by a subgraph, or also graph inputs (overridable:
  a caller may feed a different value to each);
* commutative operand order (``Add(a, b)`` vs ``Add(b, a)``) is not
  normalised: exact and cheap beats clever.

Before pruning, mind that a shared constant is one tensor to the channel
analysis: two convs whose (say, zero-initialised) biases merge into one
constant get their output channels coupled into one group, so fewer groups
are prunable (efficientnet_b0: 40 -> 22). The result stays exact; run
``dedup`` after ``prune-channels``, or ``dedup:constants=false`` before it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from graphprune.pipeline import Pass, register
from graphprune.shape_folding import NONDETERMINISTIC, overridable_constants
from graphprune.weights import release

_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def _digest(value: np.ndarray) -> bytes:
    if value.dtype == object:  # strings: hash their text, not the pointers
        return hashlib.blake2b(repr(value.tolist()).encode(), digest_size=16).digest()
    flat = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
    digest = hashlib.blake2b(flat, digest_size=16).digest()
    release(value)
    return digest


def _sample(value: np.ndarray) -> bytes:
    """A cheap fingerprint: 64 evenly strided elements. Random weights differ here already.
    (A mapped weight's pages are released after: each strided read maps a window around it.)"""
    flat = value.reshape(-1)
    picked = flat[::max(1, flat.size // 64)][:64]
    out = repr(picked.tolist()).encode() if value.dtype == object else picked.tobytes()
    release(value)
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == object:
        return a.shape == b.shape and a.tolist() == b.tolist()
    return a.shape == b.shape and np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


def dedup_constants(graph) -> tuple[dict[str, str], int]:
    """Merge identical constants; returns (duplicate -> kept name, bytes saved)."""
    outputs = set(graph.outputs)
    implicit = {t for n in graph.nodes for t in n.implicit_inputs}
    frozen = overridable_constants(graph) | outputs | implicit
    buckets: dict[tuple, list[str]] = {}
    for name, value in graph.constants.items():
        if name in frozen:
            continue
        key = (value.dtype.str, value.shape, value.nbytes, frozenset(graph.folded.get(name, ())))
        buckets.setdefault(key, []).append(name)
    rename: dict[str, str] = {}
    saved = 0
    for names in buckets.values():
        if len(names) < 2:
            continue
        by_sample: dict[bytes, list[str]] = {}
        for name in names:
            by_sample.setdefault(_sample(graph.constants[name]), []).append(name)
        by_digest: dict[bytes, list[str]] = {}
        for group in by_sample.values():
            for name in group if len(group) > 1 else ():
                by_digest.setdefault(_digest(graph.constants[name]), []).append(name)
        for group in by_digest.values():
            kept: list[str] = []
            for name in group:
                value = graph.constants[name]
                rep = next((k for k in kept if _same(graph.constants[k], value)), None)
                if rep is None:
                    kept.append(name)
                else:
                    rename[name] = rep
                    saved += int(value.nbytes)
    if rename:
        for node in graph.nodes:
            node.inputs = [rename.get(t, t) for t in node.inputs]
        for name in rename:
            del graph.constants[name]
            graph.folded.pop(name, None)
    return rename, saved


def _attr_key(node, name: str) -> bytes:
    raw = node.raw_attrs.get(name)
    if raw is None:
        raw = helper.make_attribute(name, node.attrs[name])
    proto = onnx.AttributeProto()
    proto.CopyFrom(raw)
    proto.ClearField("doc_string")
    return proto.SerializeToString(deterministic=True)


def _node_key(node) -> tuple | None:
    """The identity of the value a node computes, or None when it must never merge."""
    if (node.domain not in _DOMAINS or node.op in NONDETERMINISTIC or node.implicit_inputs
            or not any(node.outputs)
            or any(isinstance(v, onnx.GraphProto) or (isinstance(v, list) and v and isinstance(v[0], onnx.GraphProto))
                   for v in node.attrs.values())):
        return None
    attrs = tuple((name, _attr_key(node, name)) for name in sorted(node.attrs))
    return (node.domain or "", node.op, tuple(node.inputs), attrs, tuple(bool(o) for o in node.outputs))


def dedup_nodes(graph) -> tuple[Counter, list[dict]]:
    """Common subexpression elimination in one topological sweep; returns (merged by op, skipped)."""
    outputs = set(graph.outputs)
    implicit = {t for n in graph.nodes for t in n.implicit_inputs}
    rename: dict[str, str] = {}
    seen: dict[tuple, object] = {}
    kept, merged, skipped = [], Counter(), []
    for node in graph.nodes:
        node.inputs = [rename.get(t, t) for t in node.inputs]
        key = _node_key(node)
        first = seen.get(key) if key is not None else None
        if first is None:
            if key is not None:
                seen[key] = node
            kept.append(node)
            continue
        pinned = [o for o in node.outputs if o and (o in outputs or o in implicit)]
        if pinned:
            skipped.append({"node": node.name, "op": node.op, "duplicate_of": first.name,
                            "reason": f"its output '{pinned[0]}' is a graph output or read by a subgraph"})
            kept.append(node)
            continue
        for mine, theirs in zip(node.outputs, first.outputs):
            if mine:
                rename[mine] = theirs
        merged[node.op] += 1
    graph.nodes = kept
    return merged, skipped


@register
@dataclass
class Deduplicate(Pass):
    """Merge identical constants, then identical nodes (CSE).

    Options:
        constants: merge identical constants (turn off before pruning; see the module docstring).
        nodes: merge identical nodes.
    """

    name = "dedup"
    summary = "merge identical constants (dtype, shape, bytes) and identical nodes (CSE)"

    constants: bool = True
    nodes: bool = True

    def apply(self, graph) -> dict:
        renamed, saved = dedup_constants(graph) if self.constants else ({}, 0)
        merged, skipped = dedup_nodes(graph) if self.nodes else (Counter(), [])
        return {
            "changed": len(renamed) + sum(merged.values()),
            "constants_merged": len(renamed),
            "bytes_saved": saved,
            "nodes_merged": sum(merged.values()),
            "nodes_merged_by_op": dict(sorted(merged.items())),
            "skipped": skipped,
        }
