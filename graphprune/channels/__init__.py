"""Channel dependency analysis: per-op coupling rules → groups of channels.

``analyse(graph)`` runs every node's rule (``rules/``) to record how its
tensor axes are coupled (:mod:`.dims`), then solves the couplings into
:class:`ChannelGroup` objects (:mod:`.groups`): the units of pruning.
``with gqa_heads("query"):`` analyses grouped-query attention as query heads
inside every kv group (:mod:`.factors`) instead of whole kv groups.
"""

from .dims import DimTable, RuleContext, Unsupported
from .groups import GQA_MODES, ChannelAnalysis, ChannelGroup, analyse, gqa_heads

__all__ = ["DimTable", "RuleContext", "Unsupported", "ChannelAnalysis", "ChannelGroup", "analyse",
           "GQA_MODES", "gqa_heads"]
