"""The JSON report: what was kept, what it cost, and whether it verified.

Schema (stable; external tools read it)::

    {"initializers": {"<name>": {"<axis>": [kept indices, ascending]}},
     "params": [before, after], "macs": [before, after],
     "groups": [...], "pinned": [...], "verification": {...}, "settings": {...}}
"""

from __future__ import annotations

from .channels import ChannelAnalysis, ChannelGroup


def group_summary(analysis: ChannelAnalysis, group: ChannelGroup, removed=None) -> dict:
    table = analysis.table
    sizes = [table.sizes[d] or 0 for d in group.dims]
    entry = {
        "id": group.id,
        "channels": group.size if group.pinned is None else max(sizes, default=0),
        "parameters": [table.label(d) for d in analysis.constant_dims(group)],
    }
    if group.pinned is not None:
        entry["pinned"] = group.pinned
    else:
        entry["removed"] = int(removed.sum()) if removed is not None else 0
    if group.approximate:
        entry["approximate"] = group.approximate
    if group.within is not None:  # query heads inside every kv group of group ``within``
        entry["within"] = group.within
    return entry


def pinned_parameter_groups(analysis: ChannelAnalysis) -> list[dict]:
    """Pinned channel groups that hold parameters (the ones a user may ask about).

    A group counts when it ties a float parameter axis to an activation axis
    and has more than one channel, so kernel axes, size-1 axes and the integer
    pieces of shape vectors are left out.
    """
    constants = analysis.graph.constants

    def relevant(g):
        params = [d for d in analysis.constant_dims(g) if constants[analysis.table.keys[d][0]].dtype.kind == "f"]
        return (g.pinned is not None and params and len(params) < len(g.dims)
                and max(analysis.table.sizes[d] or 0 for d in g.dims) > 1)
    return [group_summary(analysis, g) for g in analysis.groups if relevant(g)]


def build_report(plan, sliced, params, macs, verification, settings) -> dict:
    analysis = plan.analysis
    if analysis.table.gqa_heads != "kv":  # how grouped-query attention was analysed (gqa_heads)
        settings = {**settings, "gqa_heads": analysis.table.gqa_heads}
    return {
        "initializers": {name: {str(axis): [int(i) for i in kept] for axis, kept in sorted(axes.items())}
                         for name, axes in sliced.items()},
        "params": list(params),
        "macs": list(macs),
        "groups": [group_summary(analysis, g, plan.removed.get(g.id)) for g in analysis.prunable_groups()],
        "pinned": pinned_parameter_groups(analysis),
        "verification": verification.to_dict(),
        "settings": settings,
    }
