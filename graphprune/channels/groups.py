"""Solve couplings into channel groups.

Two levels, both connected components:

1. **Dims → groups.** Dims joined by any coupling belong to one group. A
   group with a pinned dim is pinned as a whole (the first reason is kept for
   ``inspect``).
2. **Elements → channels.** Inside unpinned groups, every element of every
   dim is a vertex and couplings are vectorised index pairs; each connected
   component is one *channel*: everything removed together (a conv row, its
   BN scale, the consumer's columns, the head of an attention block...).

Both steps are sparse-graph components over numpy arrays, so the cost is
linear in the number of elements with no per-channel Python loop.

Grouped-query attention (``gqa_heads``): a query head is ``(kv head, q within
its kv group)``. By default (``"kv"``) heads go as whole key/value groups. With
``"query"`` (or ``"both"``) the inner factor, the query heads that share a
key/value head, is a group of its own (:func:`factor_groups`): removing its
channel *r* removes query head *r* of every kv group, so every group keeps the
same number of query heads, as Hugging Face attention requires. Dims on the
query side of the merge then belong to two groups (their kv group and the
inner-factor group); :meth:`graphprune.selection.Plan.kept` keeps an element
only when both keep it.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..ir import Graph
from ..progress import stepped
from .dims import Coupling, DimTable, RuleContext, Unsupported
from .rules import rule_for
from .shape_sources import SHAPE_INPUTS, VECTOR_OPS, only_feeds_targets, pin_reads


GQA_MODES = ("kv", "query", "both")  # remove whole kv groups / query heads inside every kv group / both
_GQA_HEADS = contextvars.ContextVar("gqa_heads", default="kv")


@contextlib.contextmanager
def gqa_heads(mode: str):
    """Analyse grouped-query attention as ``mode`` (one of :data:`GQA_MODES`) inside the block.

    ``"kv"`` (default) removes whole key/value groups; ``"query"`` keeps every
    key/value head and removes the same query heads inside every group;
    ``"both"`` offers both groups to the selection (with a local ratio *r* each
    loses its share, so about ``(1 - r)²`` of the query heads stay).

    Example::

        with graphprune.channels.gqa_heads("query"):
            result = graphprune.prune(model, 0.25, example_inputs=ids)
    """
    token = _GQA_HEADS.set(_check_mode(mode))
    try:
        yield
    finally:
        _GQA_HEADS.reset(token)


def _check_mode(mode: str) -> str:
    if mode not in GQA_MODES:
        from ..errors import InputError
        raise InputError(f"gqa_heads must be one of {', '.join(GQA_MODES)}, got {mode!r}")
    return mode


@dataclass
class ChannelGroup:
    """A set of coupled dims; ``channels[d]`` gives the channel of each element of dim ``d``."""

    id: int
    dims: list[int]
    pinned: str | None = None
    approximate: str | None = None
    size: int = 0  # number of channels
    multiple: int = 1  # keep a multiple of this many channels (alignment a kernel needs)
    channels: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    within: int | None = None  # an inner-factor group: the id of the group its dims also belong to
    partial: list[int] = field(default_factory=list)  # inner-factor group: dims only some elements of which it holds

    @property
    def prunable(self) -> bool:
        return self.pinned is None and self.size > 1


class ChannelAnalysis:
    """The dim table and its groups for one graph."""

    def __init__(self, table: DimTable, groups: list[ChannelGroup], group_of: np.ndarray):
        self.table = table
        self.graph = table.graph
        self.groups = groups
        self.group_of = group_of  # dim id -> group id
        # dim id -> [(inner-factor group id, channel of each element or -1)] it also belongs to
        self.factor_of: dict[int, list[tuple[int, np.ndarray]]] = {}

    def group_of_dim(self, tensor: str, axis: int) -> ChannelGroup | None:
        did = self.table.ids.get((tensor, axis))
        return None if did is None else self.groups[self.group_of[did]]

    def constant_dims(self, group: ChannelGroup) -> list[int]:
        return [d for d in group.dims if self.table.keys[d][0] in self.graph.constants
                and not self.table.is_virtual(d)]

    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def pin_matching(self, pattern: str) -> int:
        """Pin groups touching a tensor or node whose name matches ``pattern`` (``--keep``)."""
        regex = re.compile(pattern)
        count = 0
        for g in self.prunable_groups():
            for d in g.dims:
                names = {self.table.keys[d][0], *self.table.touched_by[d]}
                hit = next((n for n in names if regex.search(n)), None)
                if hit:
                    g.pinned = f"kept by --keep {pattern!r} (matches '{hit}')"
                    count += 1
                    break
        return count

    def pin_approximate(self) -> int:
        """Pin every approximate group (``exact=True``): only what the oracle checks exactly is pruned."""
        count = 0
        for g in self.prunable_groups():
            if g.approximate:
                g.pinned = f"kept by --exact ({g.approximate})"
                count += 1
        return count

    def describe(self, group: ChannelGroup) -> str:
        dims = self.constant_dims(group) or group.dims
        return ", ".join(self.table.label(d) for d in dims[:3]) + (" …" if len(dims) > 3 else "")


def _pin_axes(table: DimTable, tensor: str, reason: str) -> None:
    shape = table.graph.shape(tensor)
    for axis in range(len(shape or ())):
        table.pin(table.dim(tensor, axis), reason)


def _run_rules(graph: Graph, gqa: str = "kv") -> DimTable:
    table = DimTable(graph)
    table.gqa_heads = gqa
    for name in graph.inputs:
        _pin_axes(table, name, f"graph input '{name}'")
    for name in graph.outputs:
        _pin_axes(table, name, f"graph output '{name}'")
    for key, reason in graph.pinned.items():
        if isinstance(key, tuple):  # one axis of a tensor
            if graph.shape(key[0]) is not None:
                table.pin(table.dim(*key), reason)
        elif graph.shape(key) is not None:
            _pin_axes(table, key, reason)
    for node in graph.nodes:
        ctx = RuleContext(table, node)
        rule = rule_for(node.op, node.domain)
        reason = None
        try:
            if rule is None:
                raise Unsupported(f"no rule for op {node.domain + '.' if node.domain else ''}{node.op}")
            if node.implicit_inputs:
                raise Unsupported("it has subgraphs")
            rule.couple(ctx)
        except Unsupported as exc:
            reason = f"{node.op} node '{node.name}': {exc}"
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            # a rule that meets sizes it cannot handle pins the node instead of failing the model
            reason = f"{node.op} node '{node.name}': cannot analyse it ({exc.__class__.__name__}: {exc})"
        if reason:
            table.unsupported.add(node.name)
            if node.op in SHAPE_INPUTS:
                pin_reads(table, node)  # its rule failed: what its shape inputs read keeps its size
        for tensor in (*node.inputs, *node.outputs, *node.implicit_inputs):
            if not tensor or graph.shape(tensor) is None:
                continue
            for axis in range(len(graph.shape(tensor))):
                did = table.dim(tensor, axis)
                if reason or did not in ctx.mentioned:
                    table.pin(did, reason or f"{node.op} node '{node.name}' does not map "
                                             f"axis {axis} of '{tensor}'")
        for i, tensor in enumerate(node.inputs):
            sources = graph.folded.get(tensor)
            if not sources or i in REWRITTEN_INPUTS.get(node.op, ()) or _builds_targets(table, node):
                continue  # the emitter writes the new size into these
            for src, axis in sources:
                shape = graph.shape(src)
                if shape is not None and axis < len(shape):
                    table.pin(table.dim(src, axis), f"the size of '{src}' axis {axis} is read by "
                                                    f"{node.op} node '{node.name}'")
    table.finish()
    return table


# constant inputs each op's emitter recomputes for pruned axes (so a folded size there is fine)
REWRITTEN_INPUTS = {"Reshape": (1,), "Expand": (1,), "Slice": (1, 2), "Split": (1,), "Resize": (3,),
                    "ConstantOfShape": (0,)}


def _builds_targets(table: DimTable, node) -> bool:
    """A shape-vector op whose outputs only feed followed Reshape/Expand targets: the sizes
    it reads are accounted for entry by entry there (:func:`shape_sources.couple_target`)."""
    return node.op in VECTOR_OPS and node.domain in ("", "ai.onnx") and all(
        only_feeds_targets(table, out) for out in node.outputs if out)


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    matrix = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(matrix, directed=False)[1]


@stepped("grouping")
def analyse(graph: Graph, gqa: str | None = None) -> ChannelAnalysis:
    """Run the rule table over ``graph`` and solve it into channel groups.

    ``gqa`` is one of :data:`GQA_MODES` (default: the :func:`gqa_heads` in effect, ``"kv"``).
    """
    gqa = _check_mode(gqa) if gqa is not None else _GQA_HEADS.get()
    table = _run_rules(graph, gqa)
    n_dims = len(table.keys)
    group_of = _dim_components(table)
    if table.factors:
        _join_inner_factors(table, group_of)
        group_of = _dim_components(table)
    order = np.argsort(group_of, kind="stable")
    bounds = np.flatnonzero(np.diff(group_of[order])) + 1
    groups = [ChannelGroup(gid, [int(d) for d in dims])
              for gid, dims in enumerate(np.split(order, bounds)) if len(dims)]
    groups.sort(key=lambda g: g.dims[0])
    remap = np.empty(n_dims, dtype=np.int64)
    for gid, g in enumerate(groups):
        g.id = gid
        remap[g.dims] = gid
        g.pinned = next((table.pins[d] for d in g.dims if d in table.pins), None)
        g.approximate = next((table.approx[d] for d in g.dims if d in table.approx), None)
        g.multiple = math.lcm(1, *(table.multiples[d] for d in g.dims if d in table.multiples))
    analysis = ChannelAnalysis(table, groups, remap)
    _solve_channels(analysis)
    if table.broadcast:
        from .factors import factor_groups
        factor_groups(analysis)
    return analysis


def _dim_components(table: DimTable) -> np.ndarray:
    pairs = np.array([(c.a, c.b) for c in table.couplings], dtype=np.int64).reshape(-1, 2)
    return _components(len(table.keys), pairs[:, 0], pairs[:, 1])


def _join_inner_factors(table: DimTable, group_of: np.ndarray) -> None:
    """The inner factors of merges into one kv group (its key and its value ``repeat_kv``)
    are the same query-within-group index: couple them 1:1."""
    first: dict[tuple[int, int], int] = {}
    for f in table.factors:
        key = (int(group_of[f.flat]), f.size)
        if key in first and first[key] != f.inner:
            table.couplings.append(Coupling(first[key], f.inner, "same"))
        first.setdefault(key, f.inner)


def _solve_channels(analysis: ChannelAnalysis) -> None:
    table = analysis.table
    live = np.zeros(len(table.keys), dtype=bool)
    for g in analysis.groups:
        if g.pinned is None:
            live[g.dims] = True
    sizes = np.array([s or 0 for s in table.sizes], dtype=np.int64) * live
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    src, dst = [], []
    for c in table.couplings:
        if live[c.a]:
            ia, ib = c.index_pairs(int(sizes[c.a]))
            src.append(offsets[c.a] + ia)
            dst.append(offsets[c.b] + ib)
    total = int(offsets[-1])
    if total == 0:
        return
    labels = _components(total, np.concatenate(src or [np.empty(0, np.int64)]),
                         np.concatenate(dst or [np.empty(0, np.int64)]))
    for g in analysis.groups:
        if g.pinned is not None:
            continue
        spans = [labels[offsets[d]:offsets[d + 1]] for d in g.dims]
        uniq, inverse = np.unique(np.concatenate(spans), return_inverse=True)
        g.size = len(uniq)
        start = 0
        for d, span in zip(g.dims, spans):
            g.channels[d] = inverse[start:start + len(span)]
            start += len(span)
        if not analysis.constant_dims(g):
            g.pinned = "no parameter carries these channels"
