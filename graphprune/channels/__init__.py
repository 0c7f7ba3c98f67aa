"""Channel dependency analysis: per-op coupling rules → groups of channels.

``analyse(graph)`` runs every node's rule (``rules/``) to record how its
tensor axes are coupled (:mod:`.dims`), then solves the couplings into
:class:`ChannelGroup` objects (:mod:`.groups`): the units of pruning.
"""

from .dims import DimTable, RuleContext, Unsupported
from .groups import ChannelAnalysis, ChannelGroup, analyse

__all__ = ["DimTable", "RuleContext", "Unsupported", "ChannelAnalysis", "ChannelGroup", "analyse"]
