"""Budgets: prune until the model keeps a given fraction of its MACs or parameters.

A budget is met by the global policy of :mod:`graphprune.selection` (scores
made comparable by the chosen allocation, ranked across groups, no group
losing more than ``max_group_ratio``): the share of channels removed is bisected until the
plan's cost — counted from the kept sizes, without emitting anything — is
at most the target. Cost is monotone in that share, so bisection finds the
least pruning that meets the budget; when even the cap cannot reach it, the
closest plan is returned and the report says the target was not met.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .metrics import node_macs
from .selection import Plan, select

BISECTION_STEPS = 18


@dataclass
class Budget:
    metric: str  # "macs" | "params"
    target: float  # fraction of the original

    def __post_init__(self):
        if self.metric not in ("macs", "params"):
            raise InputError(f"unknown budget '{self.metric}': choose macs or params")
        if not 0.0 < self.target <= 1.0:
            raise InputError(f"--target-{self.metric} must be a fraction in (0, 1], got {self.target}")


def budget_from(target_macs: float | None, target_params: float | None) -> Budget | None:
    if target_macs is not None and target_params is not None:
        raise InputError("give one budget: --target-macs or --target-params, not both")
    if target_macs is not None:
        return Budget("macs", float(target_macs))
    if target_params is not None:
        return Budget("params", float(target_params))
    return None


class PlanCost:
    """MACs and parameter counts of the graph as a plan would leave it."""

    def __init__(self, analysis):
        self.analysis = analysis
        self.graph = analysis.graph
        graph = self.graph
        consumers = graph.consumers()
        self.params = [t for t in graph.constants if graph.constants[t].dtype.kind == "f"
                       and graph.constants[t].ndim >= 1 and t in consumers]
        self.macs_nodes = [n for n in graph.nodes if n.op in ("Conv", "ConvTranspose", "Gemm", "MatMul",
                                                              "GroupedMatMul")]

    def _sizes(self, plan: Plan) -> dict[tuple[str, int], int]:
        table = self.analysis.table
        sizes = {}
        for did in plan.changed_dims():
            kept = plan.kept(did)
            if kept is not None and not table.is_virtual(did):
                sizes[table.keys[did]] = len(kept)
        return sizes

    def __call__(self, plan: Plan) -> dict[str, int]:
        sizes = self._sizes(plan)
        graph = self.graph

        def shape(tensor):
            base = graph.shape(tensor)
            if base is None:
                return None
            return tuple(sizes.get((tensor, i), d) for i, d in enumerate(base))

        macs = sum(node_macs(graph, n, shape) for n in self.macs_nodes)
        params = sum(int(np.prod(shape(t) or graph.constants[t].shape)) for t in self.params)
        return {"macs": macs, "params": params}


def marginal_costs(analysis, scores, cost: PlanCost, full: int, metric: str) -> dict[int, float]:
    """What removing a channel of each scored group saves of ``metric`` on average, the other groups
    intact: the saving of removing the whole group over its size (one cost count per group). A count
    is linear in one group's width, so this is exact for a single channel; MACs are bilinear in
    adjacent widths, so across groups it is the first-order saving."""
    saved = {}
    for group in analysis.prunable_groups():
        if group.id in scores:
            plan = Plan(analysis, removed={group.id: np.ones(group.size, dtype=bool)})
            saved[group.id] = float(full - cost(plan)[metric]) / group.size
    return saved


def select_for_budget(analysis, scores, budget: Budget, round_to: int = 1,
                      max_group_ratio: float = 0.9, allocation: str = "normalised") -> tuple[Plan, dict]:
    """The least-pruned global plan whose cost is at most ``budget.target`` of the original."""
    cost = PlanCost(analysis)
    full = cost(Plan(analysis))[budget.metric]
    goal = budget.target * full
    # parameters per channel are selection's default; MACs need the cost model
    channel_cost = (marginal_costs(analysis, scores, cost, full, "macs")
                    if allocation == "cost" and budget.metric == "macs" else None)
    lo, hi = 0.0, min(max_group_ratio, 0.999)
    best = None
    closest = None
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        plan = select(analysis, scores, mid, True, round_to, max_group_ratio, allocation, channel_cost)
        value = cost(plan)[budget.metric]
        if closest is None or value < closest[1]:
            closest = (plan, value, mid)
        if value <= goal:
            best, hi = (plan, value, mid), mid
        else:
            lo = mid
    if best is None and budget.target >= 1.0:
        best = (Plan(analysis), full, 0.0)
    plan, value, share = best or closest
    return plan, {"metric": budget.metric, "target": budget.target, "achieved": value / full if full else 1.0,
                  "met": best is not None, "share_removed": round(share, 4)}
