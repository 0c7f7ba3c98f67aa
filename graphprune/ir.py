"""The one IR: a flat graph of ONNX-vocabulary ops over named tensors.

Both front ends (ONNX files, torch.fx) produce a :class:`Graph`; analyses and
passes read and change it; emitters turn it back into a native model. Tensors
are referred to by name. Constant data (initializers and ``Constant`` node
values) lives in ``Graph.constants`` as numpy arrays, so a rule or pass never
has to care which of the two a model used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

Dim = Union[int, str, None]  # static size, symbolic name, or unknown
Shape = tuple[Dim, ...]


@dataclass(eq=False)
class Node:
    """One op. ``attrs`` holds plain Python values; ``raw_attrs`` keeps the
    front end's original encoding so untouched attributes round-trip exactly."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    raw_attrs: dict[str, Any] = field(default_factory=dict, repr=False)
    implicit_inputs: list[str] = field(default_factory=list)  # outer-scope names used by subgraphs

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def set_attr(self, name: str, value: Any) -> None:
        self.attrs[name] = value
        self.raw_attrs.pop(name, None)

    def input(self, i: int) -> str:
        """Input ``i`` or ``""`` when the optional input is absent."""
        return self.inputs[i] if i < len(self.inputs) else ""


@dataclass
class TensorInfo:
    shape: Shape | None  # None when even the rank is unknown
    dtype: np.dtype | None = None


class Graph:
    """A model as nodes in topological order plus tensor metadata."""

    def __init__(self, nodes: list[Node], inputs: list[str], outputs: list[str],
                 tensors: dict[str, TensorInfo], constants: dict[str, np.ndarray],
                 opset: int, name: str = "graph", source: Any = None):
        self.nodes = nodes
        self.inputs = inputs
        self.outputs = outputs
        self.tensors = tensors
        self.constants = constants
        self.opset = opset
        self.name = name
        self.source = source  # front-end specific origin (ModelProto, GraphModule)
        self.folded: dict[str, set[tuple[str, int]]] = {}  # constant -> the (tensor, axis) sizes it was computed from
        self.pristine: dict[str, tuple[np.ndarray, Any]] = {}  # name -> (array as loaded, its source tensor)
        self.pinned: dict = {}  # tensor or (tensor, axis) -> why it must stay (front-end knowledge)
        self.input_shapes: dict[str, tuple[int, ...]] = {}  # declared by the user (--input-shape)
        self.symbol_values: dict[str, int] = {}  # symbolic dim -> size for metrics
        self.spill = None  # weights.Spill when the weights are memory-mapped: large results go to disk

    def release_weights(self) -> None:
        """Drop the resident pages of every memory-mapped constant (see :mod:`graphprune.weights`):
        a pass that read them all leaves the process no larger than before."""
        if self.spill is None:
            return
        from .weights import release

        for value in self.constants.values():
            release(value)

    def store(self, value: np.ndarray) -> np.ndarray:
        """A new constant value as the graph stores it: on disk when the graph is disk-backed."""
        return self.spill.put(value) if self.spill is not None else value

    # -- queries -----------------------------------------------------------
    def shape(self, tensor: str) -> Shape | None:
        if tensor in self.constants:
            return tuple(self.constants[tensor].shape)
        info = self.tensors.get(tensor)
        return info.shape if info else None

    def producers(self) -> dict[str, Node]:
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for t in (*n.inputs, *n.implicit_inputs):
                if t:
                    users.setdefault(t, []).append(n)
        return users

    def unique_name(self, base: str) -> str:
        taken = set(self.tensors) | set(self.constants) | {o for n in self.nodes for o in n.outputs}
        if base not in taken:
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    # -- edits -------------------------------------------------------------
    def add_constant(self, base: str, value: np.ndarray) -> str:
        name = self.unique_name(base)
        self.constants[name] = value
        return name

    def replace_uses(self, old: str, new: str) -> None:
        """Point every node that reads tensor ``old`` at ``new`` (graph outputs untouched)."""
        for n in self.nodes:
            n.inputs = [new if t == old else t for t in n.inputs]
            n.implicit_inputs = [new if t == old else t for t in n.implicit_inputs]

    def forward(self, node: Node, input_index: int = 0) -> bool:
        """Remove ``node`` whose first output equals its input ``input_index``.

        Readers of the output read the input instead. When the output is a
        graph output, the input's producer is renamed to keep the model's
        interface; if that is impossible (the input is a graph input, a
        constant, or itself a graph output, or a subgraph reads either name)
        the node stays and False is returned.
        """
        out, src = node.outputs[0], node.inputs[input_index]
        if any(out in n.implicit_inputs or src in n.implicit_inputs for n in self.nodes):
            return False  # subgraph bodies refer to these names; renaming would break them
        if out in self.outputs:
            producer = self.producers().get(src)
            if producer is None or src in self.outputs:
                return False
            producer.outputs = [out if t == src else t for t in producer.outputs]
            self.replace_uses(src, out)
            if src in self.tensors:
                self.tensors[out] = self.tensors[src]
        else:
            self.replace_uses(out, src)
        self.nodes.remove(node)
        return True

    def unshare_uniform_constants(self) -> int:
        """Give every reader of a shared all-equal float constant its own copy.

        Exporters merge identical initializers (every zero bias of a randomly
        initialised transformer becomes one tensor); read by layers whose
        channels are unrelated, the shared tensor would tie them into one
        group. A tensor that holds one value everywhere can be sliced any way
        with the same result, so each reader gets a broadcast view of its own
        (no copy of the data). Tied weights with real values stay shared.
        Returns the number of readers rewired.
        """
        readers: dict[str, list[tuple[Node, int]]] = {}
        for n in self.nodes:
            for i, t in enumerate(n.inputs):
                if t in self.constants:
                    readers.setdefault(t, []).append((n, i))
        rewired = 0
        for name, uses in readers.items():
            value = self.constants[name]
            if len(uses) < 2 or value.ndim == 0 or value.size < 2 or value.dtype.kind != "f" \
                    or name in self.outputs or not (value == value.reshape(-1)[0]).all():
                continue
            for node, index in uses[1:]:
                copy = self.add_constant(f"{name}_{node.name}", np.broadcast_to(value, value.shape))
                node.inputs[index] = copy
                rewired += 1
        return rewired

    def remove_unused(self) -> int:
        """Drop nodes whose outputs nobody reads and constants nobody uses.

        Returns the number of nodes removed. Lossless: graph outputs are kept.
        """
        removed = 0
        while True:
            used = set(self.outputs)
            for n in self.nodes:
                used.update(t for t in (*n.inputs, *n.implicit_inputs) if t)
            keep = [n for n in self.nodes if any(o in used for o in n.outputs if o)]
            if len(keep) == len(self.nodes):
                break
            removed += len(self.nodes) - len(keep)
            self.nodes = keep
        for name in [c for c in self.constants if c not in used]:
            del self.constants[name]
        return removed

    def param_count(self) -> int:
        return int(sum(v.size for v in self.constants.values()
                       if v.dtype.kind == "f" and v.ndim >= 1))

