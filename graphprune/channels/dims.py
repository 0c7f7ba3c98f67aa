"""Dimensions and couplings: what op rules write and the solver reads.

Every tensor axis ``(tensor, axis)`` — and any *virtual* axis a rule needs,
such as the group index of a grouped convolution — is a *dim* with an integer
id. A rule states how the elements of its dims are tied together:

* ``same(a, b)``: element *i* of ``a`` is element *i* of ``b`` (activations,
  residual adds, producer rows, consumer columns).
* ``blocks(fine, coarse, block, modulo)``: element *i* of ``fine`` belongs to
  element ``(i // block) % modulo`` of ``coarse`` (modulo defaults to the
  coarse size, i.e. plain ``i // block``; a modulo picks a *middle* axis, the
  heads of a fused ``[3·H·D] → [3, H, D]`` projection), which is
  ``i // block`` of ``coarse`` (flatten after conv, features into heads,
  channels into conv groups).
* ``offset(part, whole, start)``: element *j* of ``part`` is element
  ``start + j`` of ``whole`` (concat, split, slice).

Removing an element removes everything tied to it. Axes a rule does not
mention are *pinned* (never pruned), so an op is only as prunable as its rule
proves it to be; an op with no rule pins every axis it touches.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node
from ..symbolic import dims_equal


class Unsupported(Exception):
    """Raised by a rule that cannot couple this node; all its axes get pinned."""


@dataclass(frozen=True)
class Coupling:
    a: int
    b: int
    kind: str  # "same" | "blocks" | "offset"
    param: int = 0  # block size or start offset
    modulo: int = 0  # blocks: wrap coarse indices (a middle axis of a split)

    def index_pairs(self, size_a: int) -> tuple[np.ndarray, np.ndarray]:
        ia = np.arange(size_a, dtype=np.int64)
        if self.kind == "same":
            return ia, ia
        if self.kind == "blocks":
            return ia, (ia // self.param) % self.modulo if self.modulo else ia // self.param
        return ia, ia + self.param


@dataclass(frozen=True)
class Factor:
    """A merged axis seen as two factors: ``flat`` element *i* is ``(i // size, i % size)``
    of ``(outer, inner)``, where ``inner`` (``size`` elements) was made by an Expand from a
    size-1 axis (the query heads of a key/value head: ``[KV, R] → KV·R``, LLaMA's ``repeat_kv``).

    The solver ties ``flat`` to ``outer`` as for any merge; with the query-head option
    (:data:`graphprune.channels.groups.GQA_MODES`) the inner factor may also form a group of
    its own (:func:`graphprune.channels.groups.factor_groups`).
    """

    flat: int
    outer: int
    inner: int
    size: int
    coupling: int  # index of the flat → outer ``blocks`` coupling in ``DimTable.couplings``


@dataclass(frozen=True)
class Contraction:
    """Input ``input_index`` of the node producing ``anchor`` is summed over ``axis``.

    For ops with a weight operand the rule also says which weight axis is the
    input channel (``weight_in_axis``, the consumer columns) and which is the
    output channel (``weight_out_axis``, the producer rows, landing on
    ``out_axis`` of the output); None where no single axis is (grouped convs).
    """

    anchor: str  # first output name of the node (unique, survives node renames)
    node: str
    input_index: int
    tensor: str
    axis: int
    rank: int
    dim: int
    weight: str = ""
    weight_in_axis: int | None = None
    weight_out_axis: int | None = None
    out_axis: int | None = None


class DimTable:
    """All dims of a graph with their sizes, couplings, pins and flags."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.ids: dict[tuple[str, int], int] = {}
        self.keys: list[tuple[str, int]] = []
        self.sizes: list[int | None] = []
        self.couplings: list[Coupling] = []
        self.pins: dict[int, str] = {}
        self.approx: dict[int, str] = {}
        self.contractions: list[Contraction] = []
        self.stats: set[int] = set()  # statistics (BN mean/var): not importance evidence
        self.periodic: set[int] = set()  # symbolic axes coupled through one period (``blocks``)
        self.unsupported: set[str] = set()  # nodes whose rule pinned them whole (their emitters are skipped)
        self.multiples: dict[int, int] = {}  # dim -> its kept size must be a multiple of this (kernel alignment)
        self.touched_by: dict[int, set[str]] = defaultdict(set)
        self.gqa_heads = "kv"  # "kv" | "query" | "both": see groups.GQA_MODES
        self.broadcast: set[int] = set()  # Expand output axes made from a size-1 axis (mapped only under gqa_heads)
        self.factors: list[Factor] = []
        self.single_kv: set[int] = set()  # broadcast axes of one kv head repeated for every query head
        self.producers = graph.producers()  # the graph does not change during analysis
        self.consumers = graph.consumers()

    def dim(self, tensor: str, axis: int) -> int:
        key = (tensor, axis)
        if key in self.ids:
            return self.ids[key]
        shape = self.graph.shape(tensor)
        size = shape[axis] if shape is not None and axis < len(shape) else None
        return self._new(key, size if isinstance(size, int) else None)

    def virtual(self, label: str, size: int) -> int:
        return self._new((label, -1), size)

    def _new(self, key: tuple[str, int], size: int | None) -> int:
        did = len(self.keys)
        self.ids[key] = did
        self.keys.append(key)
        self.sizes.append(size)
        return did

    def set_period(self, did: int, period: int) -> None:
        """A symbolic axis whose channels repeat every ``period`` elements (see ``blocks``)."""
        if self.sizes[did] is None:
            self.sizes[did] = period
            self.periodic.add(did)
        elif self.sizes[did] != period:
            self.pin(did, f"{self.label(did)} repeats with periods {self.sizes[did]} and {period}")

    def finish(self) -> None:
        """Spread periods along 1:1 couplings, then pin what is still without a size.

        Every axis in a chain of ``same`` couplings from a periodic axis (the
        transposes and batched matmuls after a merged-batch reshape) repeats
        with the same period. Contractions over a periodic axis are pinned:
        the oracle's mask would need the symbolic repeat count.
        """
        changed = True
        while changed:
            changed = False
            for c in self.couplings:
                if c.kind != "same":
                    continue
                for a, b in ((c.a, c.b), (c.b, c.a)):
                    if a in self.periodic and self.sizes[b] is None:
                        self.set_period(b, self.sizes[a])
                        changed = True
                    elif a in self.periodic and b not in self.periodic:
                        self.pin(a, f"{self.label(a)} repeats but {self.label(b)} does not")
        for did, size in enumerate(self.sizes):
            if size is None:
                self.pin(did, f"'{self.keys[did][0]}' axis {self.keys[did][1]} has no static size")
        for c in self.contractions:
            if c.dim in self.periodic:
                self.pin(c.dim, f"{c.node} contracts over a symbolic repeating axis")

    def pin(self, did: int, reason: str) -> None:
        self.pins.setdefault(did, reason)

    def is_virtual(self, did: int) -> bool:
        return self.keys[did][1] < 0

    def label(self, did: int) -> str:
        t, a = self.keys[did]
        return t if a < 0 else f"{t}[axis {a}]"


class RuleContext:
    """What a rule sees of one node, and the calls it makes to couple dims."""

    def __init__(self, table: DimTable, node: Node):
        self.table = table
        self.graph = table.graph
        self.node = node
        self.mentioned: set[int] = set()

    # -- reading the node --------------------------------------------------
    @property
    def opset(self) -> int:
        return self.graph.opset

    def attr(self, name, default=None):
        return self.node.attr(name, default)

    def shape(self, tensor: str) -> tuple:
        shape = self.graph.shape(tensor)
        if shape is None:
            raise Unsupported(f"shape of '{tensor}' could not be inferred")
        return shape

    def rank(self, tensor: str) -> int:
        return len(self.shape(tensor))

    def const(self, tensor: str) -> np.ndarray | None:
        return self.graph.constants.get(tensor) if tensor else None

    def const_ints(self, index: int, what: str) -> list[int] | None:
        """Input ``index`` as a list of ints; None if absent; Unsupported if dynamic."""
        name = self.node.input(index)
        if not name:
            return None
        value = self.const(name)
        if value is None:
            raise Unsupported(f"{what} ('{name}') is computed at run time")
        return [int(v) for v in np.asarray(value).reshape(-1)]

    # -- coupling ----------------------------------------------------------
    def dim(self, tensor: str, axis: int) -> int:
        rank = self.rank(tensor)
        if not -rank <= axis < rank:
            raise Unsupported(f"axis {axis} out of range for '{tensor}'")
        did = self.table.dim(tensor, axis % rank)
        self.mentioned.add(did)
        self.table.touched_by[did].add(self.node.name)
        return did

    def virtual(self, label: str, size: int) -> int:
        did = self.table.virtual(f"{self.node.name}:{label}", size)
        self.mentioned.add(did)
        self.table.touched_by[did].add(self.node.name)
        return did

    def _size(self, did: int):
        return self.table.sizes[did]

    def same(self, a: int, b: int) -> None:
        sa, sb = self._size(a), self._size(b)
        if sa is not None and sb is not None and sa != sb:
            raise Unsupported(f"{self.table.label(a)} has {sa} channels but "
                              f"{self.table.label(b)} has {sb}")
        self.table.couplings.append(Coupling(a, b, "same"))

    def blocks(self, fine: int, coarse: int, block: int, outer: int = 1, periodic: bool = False) -> None:
        """``fine`` is ``outer × coarse × block`` elements, outermost first.

        With ``periodic`` the fine axis is a symbolic number of such runs (a
        batch merged in front): it is coupled through one period.
        """
        sc = self._size(coarse)
        if periodic:
            if sc is None:
                return  # nothing static to repeat: the axes stay unmapped
            self.table.set_period(fine, outer * sc * block)
        sf = self._size(fine)
        if sf is not None and sc is not None and sf != outer * sc * block:
            raise Unsupported(f"{self.table.label(fine)} ({sf}) is not {outer}×{sc} blocks of {block}")
        self.table.couplings.append(Coupling(fine, coarse, "blocks", block, sc if outer > 1 or periodic else 0))

    def factor(self, flat: int, outer: int, inner: int) -> None:
        """``flat`` is ``outer × inner`` and ``inner`` is an Expand's broadcast axis (see :class:`Factor`).

        Ties ``flat`` to ``outer`` exactly as :meth:`blocks` does (so groups are
        unchanged unless the inner factor is found to be prunable on its own) and
        records the factorisation.
        """
        size = self._size(inner)
        self.blocks(flat, outer, size)
        self.table.factors.append(Factor(flat, outer, inner, size, len(self.table.couplings) - 1))

    def offset(self, part: int, whole: int, start: int) -> None:
        sp, sw = self._size(part), self._size(whole)
        if sp is not None and sw is not None and start + sp > sw:
            raise Unsupported(f"{self.table.label(part)} does not fit in {self.table.label(whole)}")
        self.table.couplings.append(Coupling(part, whole, "offset", start))

    def same_axes(self, x: str, y: str, axes_x, axes_y) -> None:
        for ax, ay in zip(axes_x, axes_y):
            self.same(self.dim(x, ax), self.dim(y, ay))

    def broadcast(self, x: str, y: str) -> None:
        """Couple ``x`` to ``y`` under numpy broadcasting (size-1 axes stay pinned).

        Sizes that are equal (for every value of their symbols) are coupled.
        A symbolic size the graph cannot relate to the result's (``unk__3``
        against ``seq``: equal at run time, or 1) is pinned on both sides
        rather than guessed; the node's other axes are still coupled.
        """
        sx, sy = self.shape(x), self.shape(y)
        lead = len(sy) - len(sx)
        if lead < 0:
            raise Unsupported(f"'{x}' has higher rank than the result '{y}'")
        for ax, dx in enumerate(sx):
            dy = sy[ax + lead]
            if dims_equal(dx, dy):
                self.same(self.dim(x, ax), self.dim(y, ax + lead))
            elif dx == 1:
                continue
            elif isinstance(dx, int) and isinstance(dy, int):
                raise Unsupported(f"cannot relate axis {ax} of '{x}' ({dx}) to '{y}' ({dy})")
            else:
                reason = (f"{self.node.op} node '{self.node.name}': axis {ax} of '{x}' ({dx}) is not "
                          f"provably the size of axis {ax + lead} of '{y}' ({dy})")
                self.pin(self.dim(x, ax), reason)
                self.pin(self.dim(y, ax + lead), reason)

    # -- flags -------------------------------------------------------------
    def pin(self, did: int, reason: str) -> None:
        self.table.pin(did, reason)

    def approximate(self, did: int, reason: str) -> None:
        self.table.approx.setdefault(did, reason)

    def multiple(self, did: int, n: int) -> None:
        """The kept size of ``did`` must be a multiple of ``n`` (a kernel's alignment)."""
        self.table.multiples[did] = math.lcm(self.table.multiples.get(did, 1), int(n))

    def contracts(self, input_index: int, axis: int, weight: tuple | None = None,
                  out_axis: int | None = None) -> None:
        """Input ``input_index`` is summed over ``axis``: the oracle zeroes removed channels here.

        ``weight=(index, in_axis, out_axis)`` names the weight operand and its
        input- and output-channel axes; ``out_axis`` is the output's channel axis.
        """
        tensor = self.node.input(input_index)
        did = self.dim(tensor, axis)
        w_index, w_in, w_out = weight if weight else (None, None, None)
        self.table.contractions.append(Contraction(
            self.node.outputs[0], self.node.name, input_index, tensor,
            axis % self.rank(tensor), self.rank(tensor), did,
            self.node.input(w_index) if w_index is not None else "", w_in, w_out, out_axis))

    def statistics(self, tensor: str) -> None:
        if tensor:
            self.table.stats.add(self.dim(tensor, 0))
