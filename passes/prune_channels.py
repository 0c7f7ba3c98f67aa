"""prune-channels: remove the least important channels of every prunable group.

The lossy pass. Analysis, policy and emission live in the library
(``graphprune.channels``, ``importance``, ``selection``); this pass wires them
to the graph and checks the result against the oracle (removed channels
zeroed at their consumers) instead of against its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphprune.channels import analyse
from graphprune.channels.apply import apply_plan
from graphprune.importance import importance as score_channels
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
    replay: object = field(default=None, repr=False)  # kept indices from a report (plan_io.read_plan)
    plan: object = field(default=None, init=False, repr=False)
    sliced: dict = field(default_factory=dict, init=False, repr=False)

    def apply(self, graph) -> dict:
        analysis = analyse(graph)
        if self.keep:
            analysis.pin_matching(self.keep)
        if self.exact:
            analysis.pin_approximate()
        if self.replay is not None:
            self.plan = plan_from_kept(analysis, self.replay)
        else:
            self.plan = select(analysis, score_channels(analysis, self.importance), self.ratio,
                               self.global_ranking, self.round_to, self.max_group_ratio)
        self.sliced = apply_plan(graph, self.plan)
        graph.remove_unused()
        return {"changed": self.plan.channels_removed,
                "groups": [group_summary(analysis, g, self.plan.removed.get(g.id))
                           for g in analysis.prunable_groups()],
                "pinned": pinned_parameter_groups(analysis)}

    def check(self, before, after, input_shapes=None):
        return verify_prune(before, after, self.plan, input_shapes=input_shapes)
