"""Inner-factor groups: query heads inside every key/value group (grouped-query attention).

LLaMA-style attention repeats each of ``KV`` key/value heads for the ``R``
query heads that read it: ``[B, KV, S, D] → Unsqueeze → [B, KV, 1, S, D] →
Expand → [B, KV, R, S, D] → Reshape → [B, KV·R, S, D]``. Query head ``h`` is
``(kv = h // R, r = h % R)``. The merging Reshape ties the query-head axis to
the kv heads (:meth:`~graphprune.channels.dims.RuleContext.factor`), so by
default a kv head goes with all its query heads.

Under ``gqa_heads="query"``/``"both"`` the inner factor ``r`` becomes a
group of its own. Its dims are the Expand's broadcast axes (every element a
copy, so keeping ``R'`` of them is only a smaller target entry) and every
dim on the *query side* of the merge (the query projection's rows, the query
head axis through rotary embedding and the attention matmuls, the output
projection's columns), each element labelled with its ``r``. Removing
channel ``r`` removes query head ``r`` of every kv group: each group keeps
``R'`` query heads, the pruned model's ``[KV', R'] → KV'·R'`` merge is the
same code with smaller sizes, and the oracle's mask (the output projection's
columns of the removed heads) describes it exactly.

The structure is accepted only when it is proved, else the inner factor
stays pinned with the reason:

* following the head group's couplings with the merges cut, from the merged
  axes (element ``i`` labelled ``i % R``), no element gets two labels and no
  key/value head gets one (every path between the sides goes through a
  merge); a fused projection's rows hold both sides, its query rows labelled;
* in every query-side dim the (kv head, r) pairs form a full product, so
  keeping any kv heads and any ``r`` never empties a dim;
* the broadcast axes are coupled to nothing but each other.

With a single key/value head (multi-query attention, ``[1, R] → R``) the
query heads and the broadcast axes they are merged from are one ordinary
group: removing query head ``r`` keeps ``R - 1`` copies of the kv head.

Any other Expand broadcast axis is pinned.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .groups import ChannelAnalysis, ChannelGroup


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    matrix = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(matrix, directed=False)[1]


def factor_groups(analysis: ChannelAnalysis) -> None:
    """Turn proved inner factors into groups (see the module docstring); pin the rest."""
    table = analysis.table
    by_inner: dict[int, list] = {}
    for f in table.factors:
        by_inner.setdefault(int(analysis.group_of[f.inner]), []).append(f)
    heads = {int(analysis.group_of[f.flat]) for f in table.factors}
    couplings: dict[int, list[int]] = {gid: [] for gid in heads}  # head group -> its couplings
    for i, c in enumerate(table.couplings):
        gid = int(analysis.group_of[c.a])
        if gid in couplings:
            couplings[gid].append(i)
    single = {int(analysis.group_of[d]) for d in table.single_kv}
    for did in table.broadcast:  # first, so that no proof rests on a group pinned afterwards
        group = analysis.groups[analysis.group_of[did]]
        if group.id in single and did in table.single_kv:
            continue  # the query heads of one kv head (multi-query attention): an ordinary group
        if group.id not in by_inner and group.pinned is None:
            group.pinned = f"{table.label(did)} is an Expand's broadcast axis, not a query-head factor"
    proved: set[int] = set()
    for gid, factors in by_inner.items():
        group = analysis.groups[gid]
        reason = _prove(analysis, group, factors, couplings)
        if reason is None:
            proved.add(gid)
        else:
            group.pinned = f"query heads inside kv groups: {reason}"
    if table.gqa_heads == "query":
        for gid in proved:
            outer = analysis.groups[analysis.groups[gid].within]
            if outer.pinned is None:
                outer.pinned = "kv heads kept whole (gqa_heads='query' removes query heads inside every kv group)"


def _prove(analysis: ChannelAnalysis, inner: ChannelGroup, factors: list, couplings: dict) -> str | None:
    """Make ``inner`` the group of the query-within-group index, or say why not."""
    table = analysis.table
    inner_dims = {f.inner for f in factors}
    outer = analysis.groups[analysis.group_of[factors[0].flat]]
    if any(analysis.group_of[f.flat] != outer.id for f in factors):
        return "the merges belong to different head groups"
    if outer.pinned is not None:
        return f"their kv group is pinned ({outer.pinned})"
    if not inner_dims <= set(inner.dims) or not set(inner.dims) <= table.broadcast:
        return "the broadcast axis is coupled to other axes"
    if any(d in table.pins for d in inner.dims):
        return next(table.pins[d] for d in inner.dims if d in table.pins)
    size = factors[0].size
    if any(f.size != size for f in factors) or inner.size != size or outer.multiple > 1:
        return "the merges repeat the kv heads differently"
    labels = _labels(analysis, outer, factors, inner, couplings[outer.id])
    if isinstance(labels, str):
        return labels
    for d, r in labels.items():
        has = r >= 0
        kv = outer.channels[d][has]
        pairs = np.unique(kv * size + r[has])
        if len(pairs) != len(np.unique(kv)) * len(np.unique(r[has])):
            return f"{table.label(d)} does not hold every query head of its kv heads"
    inner.pinned = None
    inner.within = outer.id
    for d, r in labels.items():
        if (r >= 0).all():  # a query-side dim: evidence for the group's importance
            inner.channels[d] = r
            inner.dims.append(d)
        else:  # a fused projection's rows: its query rows are in the group, its key/value rows not
            inner.partial.append(d)
        analysis.factor_of.setdefault(d, []).append((inner.id, r))
    inner.dims.sort()
    inner.approximate = inner.approximate or outer.approximate
    return None


def _labels(analysis: ChannelAnalysis, outer: ChannelGroup, factors: list, inner: ChannelGroup,
            couplings: list[int]) -> dict[int, np.ndarray] | str:
    """``r`` of every element of ``outer``'s dims (-1: a kv-side element), by components of
    the group's couplings with the merges cut and element *i* of each merged axis tied to
    ``r = i % R``. A fused projection's rows hold both sides (query rows labelled, key and
    value rows not)."""
    table = analysis.table
    size = factors[0].size
    dims = outer.dims
    sizes = np.array([table.sizes[d] for d in dims], dtype=np.int64)
    start = dict(zip(dims, np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()))
    total = int(sizes.sum())
    cut = {f.coupling for f in factors}
    src, dst = [], []
    for i in couplings:
        c = table.couplings[i]
        if i not in cut:
            ia, ib = c.index_pairs(int(table.sizes[c.a]))
            src.append(start[c.a] + ia)
            dst.append(start[c.b] + ib)
    for f in factors:  # element i of the merged axis is r = inner channel of (i % R)
        i = np.arange(table.sizes[f.flat], dtype=np.int64)
        src.append(start[f.flat] + i)
        dst.append(total + inner.channels[f.inner][i % size])
    comp = _components(total + inner.size, np.concatenate(src), np.concatenate(dst))
    seeds = comp[total:]
    if len(np.unique(seeds)) != inner.size:
        return "the query heads of different positions in a kv group are coupled"
    label_of = np.full(int(comp.max()) + 1, -1, dtype=np.int64)
    label_of[seeds] = np.arange(inner.size)
    labels = label_of[comp[:total]]
    if any((labels[start[f.outer]:start[f.outer] + table.sizes[f.outer]] >= 0).any() for f in factors):
        return "the query heads reach the kv heads other than through the merges"
    out = {d: labels[start[d]:start[d] + table.sizes[d]] for d in dims}
    return {d: r for d, r in out.items() if (r >= 0).any()}
