"""A symbolic trace that sees into ``nn.MultiheadAttention``.

``torch.fx`` keeps every ``torch.nn`` module as a leaf, and the translation cannot
see into the attention leaf (its forward branches on shapes and masks), so a model
holding one (torchvision's ViT) fell back to ``torch.export``: seconds of tracing,
and a shape-locked tracer. Here the tracer writes the leaf's math into the graph
instead, for the self-attention it can state exactly::

    q, k, v = (x·W_inᵀ + b_in).unflatten(-1, (3, H, d)).unbind(-3)
    y = sdpa(q, k, v) (heads moved before the positions), flattened back, ·W_outᵀ + b_out

which is what ``F.multi_head_attention_forward`` computes without masks, dropout or
extra key/value biases. The head count and width are literals the emission rewrites
when heads go. The averaged attention weights (``need_weights=True``, the default) are
``softmax(q·kᵀ/√d)`` averaged over heads; when nothing reads them (the usual
``attn(x, x, x)[0]``) their nodes are dropped after the trace.

Anything else (cross-attention, masks, dropout, ``kdim``/``vdim``, ``bias_k``,
``add_zero_attn``) stays a leaf, so the model goes to torch.export as before.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

_WEIGHTS = "graphprune_attention_weights"  # node.meta key: a node computing only the averaged weights
_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def symbolic_trace(module: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with :class:`AttentionTracer`."""
    tracer = AttentionTracer()
    graph = tracer.trace(module)
    if tracer.decomposed:
        _drop_unread_weights(graph)
    return fx.GraphModule(tracer.root, graph, type(module).__name__)


class AttentionTracer(fx.Tracer):
    """Traces self-attention ``nn.MultiheadAttention`` calls as their math (module docstring)."""

    decomposed = 0

    def call_module(self, m, forward, args, kwargs):
        bound = _self_attention_call(m, args, kwargs) if isinstance(m, nn.MultiheadAttention) else None
        if bound is None:
            return super().call_module(m, forward, args, kwargs)
        x, need_weights, average = bound
        self.decomposed += 1
        y, q, k = self_attention(m, x)
        if not need_weights:
            return y, None
        last = self.graph._root.prev  # the weights' nodes are the ones made from here on
        weights = attention_weights(q, k, m.head_dim, average)
        node = last.next
        while node is not self.graph._root:
            node.meta[_WEIGHTS] = True
            node = node.next
        return y, weights


def _self_attention_call(m: nn.MultiheadAttention, args, kwargs):
    """``(x, need_weights, average)`` if the call is one :func:`self_attention` states exactly."""
    try:
        call = _SIGNATURE.bind(m, *args, **kwargs)
    except TypeError:
        return None
    call.apply_defaults()
    a = call.arguments
    plain = (a["query"] is a["key"] is a["value"] and a["key_padding_mask"] is None and a["attn_mask"] is None
             and a["is_causal"] is False and isinstance(a["need_weights"], bool)
             and isinstance(a["average_attn_weights"], bool))
    module_plain = (m._qkv_same_embed_dim and m.bias_k is None and m.bias_v is None and not m.add_zero_attn
                    and m.dropout == 0.0 and m.in_proj_weight is not None)
    if not (plain and module_plain):
        return None
    return a["query"], a["need_weights"], a["average_attn_weights"]


def self_attention(m: nn.MultiheadAttention, x):
    """``(y, q, k)``: ``y = m(x, x, x)[0]`` without masks, ``q``/``k`` heads-first ``(N, H, L, d)``.

    Rank-agnostic (batched or not): the heads axis is moved with transposes over fixed
    axes only. Batch-first ``(N, L, H, d) → (N, H, L, d)`` swaps −3/−2. Sequence-first
    ``(L, N, H, d)`` gets there by swapping 0/−2 then 0/−3 (a no-op when unbatched); the
    output undoes both in reverse order."""
    qkv = F.linear(x, m.in_proj_weight, m.in_proj_bias).unflatten(-1, (3, m.num_heads, m.head_dim))
    parts = qkv.unbind(-3)  # indexed, not unpacked: a proxy cannot be iterated
    q, k, v = (_heads_first(parts[i], m.batch_first) for i in range(3))
    y = F.scaled_dot_product_attention(q, k, v)
    return F.linear(_heads_back(y, m.batch_first).flatten(-2), m.out_proj.weight, m.out_proj.bias), q, k


def attention_weights(q, k, width: int, average: bool):
    """``softmax(q·kᵀ/√d)``, averaged over the heads axis if ``average`` (as the module returns them)."""
    weights = torch.softmax(torch.matmul(q * (1.0 / math.sqrt(width)), k.transpose(-2, -1)), dim=-1)
    return weights.mean(dim=-3) if average else weights


def _heads_first(t, batch_first: bool):
    if batch_first:
        return t.transpose(-3, -2)
    return t.transpose(0, -2).transpose(0, -3)


def _heads_back(t, batch_first: bool):
    if batch_first:
        return t.transpose(-3, -2)
    return t.transpose(0, -3).transpose(0, -2)


def _drop_unread_weights(graph: fx.Graph) -> None:
    """Erase the weights' nodes that nothing reads, last first."""
    for node in reversed(list(graph.nodes)):
        if node.meta.get(_WEIGHTS) and not node.users:
            graph.erase_node(node)
