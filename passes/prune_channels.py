"""prune-channels: remove the least important channels of every prunable group.

The lossy pass. Analysis, policy and emission live in the library
(``graphprune.channels``, ``importance``, ``selection``, ``budget``); this
pass wires them to the graph and checks the result against the oracle
(removed channels zeroed at their consumers) instead of against its input.

With ``calibration`` batches (feed dicts) it gathers activation statistics
in onnxruntime for the activation-aware criteria and plans the repair of the
kept weights (``self.repair``); the repair is written in after verification
by :func:`graphprune.api.prune`, since the oracle checks the structure on the
original weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphprune.activation_importance import (ACTIVATION_CRITERIA, AUTO, activation_importance,
                                               default_criterion, needed_statistics)
from graphprune.budget import budget_from, select_for_budget
from graphprune.channels import analyse
from graphprune.channels.apply import apply_plan
from graphprune.emit.onnx import to_onnx
from graphprune.errors import InputError
from graphprune.importance import importance as score_channels
from graphprune.onnx_calibration import collect_onnx_statistics
from graphprune.repair import plan_repair, repair_inputs
from graphprune.pipeline import Pass, register
from graphprune.plan_io import plan_from_kept
from graphprune.report import group_summary, pinned_parameter_groups
from graphprune.selection import select
from graphprune.verify import verify_prune


@register
@dataclass
class PruneChannels(Pass):
    name = "prune-channels"
    summary = "remove a ratio of each channel group by L1/L2 importance (lossy; oracle-verified)"
    lossless = False

    ratio: float = 0.5
    importance: str = "l2"
    global_ranking: bool = False
    round_to: int = 1
    keep: str = ""
    exact: bool = False  # pin approximate groups (through a norm): only exactly-checked channels go
    max_group_ratio: float = 0.9
    allocation: str = "normalised"  # how the global ranking compares groups (graphprune.selection)
    target_macs: float = 0.0  # a budget instead of the ratio: keep at most this fraction of MACs
    target_params: float = 0.0  # ... or of parameters
    repair: str = "none"  # with calibration: "bias" / "lsq" (planned here, applied after verification)
    replay: object = field(default=None, repr=False)  # kept indices from a report (plan_io.read_plan)
    calibration: list = field(default_factory=list, repr=False)  # feed dicts for activation statistics
    plan: object = field(default=None, init=False, repr=False)
    sliced: dict = field(default_factory=dict, init=False, repr=False)
    planned_repair: object = field(default=None, init=False, repr=False)
    budget_outcome: dict | None = field(default=None, init=False, repr=False)
    statistics: int = field(default=0, init=False, repr=False)

    def apply(self, graph) -> dict:
        analysis = analyse(graph)
        if self.keep:
            analysis.pin_matching(self.keep)
        if self.exact:
            analysis.pin_approximate()
        if self.importance == AUTO:
            self.importance = (default_criterion(needed_statistics(analysis), self.repair, reconstruction=False)
                               if self.calibration else "l2")
        needs_stats = self.importance in ACTIVATION_CRITERIA or self.repair != "none"
        if needs_stats and not self.calibration:
            raise InputError(f"importance '{self.importance}' / repair '{self.repair}' needs calibration data "
                             "(--calibration FILE.npz)")
        model = to_onnx(graph) if needs_stats else None
        wanted = needed_statistics(analysis)
        gram = set(wanted) if self.importance == "reconstruction" else frozenset()
        stats = collect_onnx_statistics(model, self.calibration, wanted, gram) if model else {}
        self.statistics = len(stats)
        if self.replay is not None:
            self.plan = plan_from_kept(analysis, self.replay)
        else:
            if self.importance in ACTIVATION_CRITERIA:
                scores, _ = activation_importance(analysis, stats, self.importance)
            else:
                scores = score_channels(analysis, self.importance)
            budget = budget_from(self.target_macs or None, self.target_params or None)
            if budget is not None:
                self.plan, self.budget_outcome = select_for_budget(analysis, scores, budget, self.round_to,
                                                                   self.max_group_ratio, self.allocation)
            else:
                self.plan = select(analysis, scores, self.ratio, self.global_ranking, self.round_to,
                                   self.max_group_ratio, self.allocation)
        if self.repair != "none" and self.plan.channels_removed:
            if self.repair == "lsq" and not gram:  # with reconstruction importance every Gram is there
                pruned_inputs = repair_inputs(analysis, self.plan, stats)
                stats.update(collect_onnx_statistics(model, self.calibration, pruned_inputs, gram=set(pruned_inputs)))
            self.planned_repair = plan_repair(analysis, self.plan, stats, self.repair)
        self.sliced = apply_plan(graph, self.plan)
        graph.remove_unused()
        return {"changed": self.plan.channels_removed,
                "groups": [group_summary(analysis, g, self.plan.removed.get(g.id))
                           for g in analysis.prunable_groups()],
                "pinned": pinned_parameter_groups(analysis)}

    def check(self, before, after, input_shapes=None):
        return verify_prune(before, after, self.plan, input_shapes=input_shapes)
