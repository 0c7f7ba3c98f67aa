"""Mixture-of-Experts FFNs on the PyTorch path: grouped matmuls (``frontends/fx_ops.py``, the
``GroupedMatMul`` rule in ``channels/rules/grouped.py``).

A tiny hand-written expert FFN checks the translation and the rule (both spellings of the op, the
forms left opaque, the MACs); Mixtral and Qwen2-MoE from the Hugging Face zoo are pruned as built
and must verify exactly, shrink every expert along its intermediate axis with one kept set shared
by all experts, leave the routing alone, and keep working as models (other shapes, ``generate``).

The Hugging Face models run in eager mode through ``F.grouped_mm``, whose CPU kernel needs every
row stride to be a multiple of 16 bytes: a ratio that leaves a width that is not a multiple of 4
floats (Mixtral's 512 → 359, Qwen2-MoE's 128 → 90) is exact, but only the pruned GraphModule (its
traced ``grouped_mm_fallback`` takes any width) runs it; ``round_to=4`` keeps the original class.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import graphprune
from graphprune.channels import analyse
from graphprune.frontends.fx import _exported, trace
from graphprune.frontends.fx_ops import translate
from graphprune.metrics import total_macs

transformers = pytest.importorskip("transformers")
from transformers.integrations import moe as _hf_moe  # noqa: E402,F401  (registers torch.ops.transformers)

from graphprune.models.hf_zoo import build_hf, example  # noqa: E402

E, H, I, N = 3, 8, 16, 10  # experts, hidden, intermediate, tokens


def offsets(n: int) -> torch.Tensor:
    """Cumulative token counts of ``n`` tokens sorted by expert (10 → [3, 6, 10]); they must cover
    every row: the kernels leave rows past ``offs[-1]`` uninitialised."""
    return torch.arange(1, E + 1, dtype=torch.int32) * n // E


def _fallback(x, w, offs):
    return torch.ops.transformers.grouped_mm_fallback(x, w, offs)


def _aten(x, w, offs):
    return torch._grouped_mm(x, w, offs=offs)


class TinyExperts(nn.Module):
    """``relu(x @ up[e]ᵀ) @ down[e]ᵀ`` per expert segment, weights stored like Hugging Face's."""

    def __init__(self, grouped):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.up = nn.Parameter(torch.randn(E, I, H, generator=g))  # [E, out, in] (nn.Linear layout)
        self.down = nn.Parameter(torch.randn(E, H, I, generator=g))
        self.grouped = grouped

    def forward(self, x):
        offs = offsets(x.shape[0])  # from sizes: a constant of the IR, recomputed at every length
        h = torch.relu(self.grouped(x, self.up.transpose(-2, -1), offs))
        return self.grouped(h, self.down.transpose(-2, -1), offs)


def _per_expert(x, up, down):
    start, out = 0, []
    for e, end in enumerate(offsets(len(x)).tolist()):
        out.append(torch.relu(x[start:end] @ up[e].T) @ down[e].T)
        start = end
    return torch.cat(out)


@pytest.mark.parametrize("grouped", [_fallback, _aten], ids=["transformers_fallback", "aten_grouped_mm"])
def test_grouped_matmul_translates_and_prunes_the_intermediate(grouped):
    model = TinyExperts(grouped).eval()
    x = torch.randn(N, H, generator=torch.Generator().manual_seed(1))
    traced = trace(model, (x,))
    assert not traced.untranslated, traced.untranslated
    nodes = [n for n in traced.graph.nodes if n.op == "GroupedMatMul"]
    assert len(nodes) == 2
    assert total_macs(traced.graph) == N * H * I + N * I * H  # N·K·M per grouped matmul
    analysis = analyse(traced.graph)
    inner = analysis.group_of_dim("up", 1)
    assert inner.prunable and inner.size == I
    assert analysis.group_of_dim("down", 2) is inner  # up's outputs are down's contracted inputs
    assert "routing" in analysis.group_of_dim("up", 0).pinned  # the expert axis
    assert analysis.group_of_dim("down", 1).pinned  # H reaches the graph output

    original = copy.deepcopy(model)
    result = graphprune.prune(model, 0.25, example_inputs=x)  # 16 → 12, kept at 16: 8-aligned
    assert not result.report["initializers"]
    result = graphprune.prune(model, 0.5, example_inputs=x)
    assert result.verification.status == "exact", result.verification
    keep = result.report["initializers"]["up"]["1"]
    assert result.report["initializers"] == {"up": {"1": keep}, "down": {"2": keep}}
    assert len(keep) == 8  # a multiple of the kernel alignment
    assert result.report["macs"] == [2 * N * H * I, 2 * N * H * 8]
    assert model.up.shape == (E, 8, H) and model.down.shape == (E, H, 8)
    idx = torch.tensor(keep)
    torch.testing.assert_close(model.up, original.up[:, idx], rtol=0, atol=0)
    torch.testing.assert_close(model.down, original.down[:, :, idx], rtol=0, atol=0)
    gone = torch.tensor(sorted(set(range(I)) - set(keep)))
    with torch.no_grad():
        reference = _per_expert(x, original.up, original.down.index_fill(2, gone, 0.0))  # oracle, by hand
        torch.testing.assert_close(result.model(x), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grouped", [_fallback, _aten], ids=["transformers_fallback", "aten_grouped_mm"])
def test_grouped_matmul_translates_from_torch_export(grouped):
    """The ATen spellings (``aten._grouped_mm.default``, whose export needs bfloat16, and the
    ``transformers::grouped_mm_fallback`` custom op) read their arguments by schema name."""
    model = TinyExperts(grouped).eval().to(torch.bfloat16)
    x = torch.randn(N, H).bfloat16()
    gm = _exported(model, (x,))
    assert sum("grouped_mm" in str(n.target) for n in gm.graph.nodes) == 2
    traced = translate(model, gm, "torch.export", (x,))
    assert not traced.untranslated, traced.untranslated
    assert [n.op for n in traced.graph.nodes].count("GroupedMatMul") == 2
    assert analyse(traced.graph).group_of_dim("up", 1).prunable


def test_grouped_matmul_forms_it_cannot_express_stay_opaque():
    class Batched(nn.Module):  # 3-D × 3-D (one group per leading index, no offsets)
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(E, H, I))

        def forward(self, x):
            return torch._grouped_mm(x, self.w)

    traced = trace(Batched().eval(), (torch.randn(E, 4, H),))
    assert any("_grouped_mm" in u for u in traced.untranslated), traced.untranslated
    assert not any(n.op == "GroupedMatMul" for n in traced.graph.nodes)


# -- the Hugging Face zoo --------------------------------------------------------------------------

INTERMEDIATE = {"mixtral": 512, "qwen2_moe": 128}


def _experts(model):
    return [layer.mlp.experts for layer in model.model.layers]


def _check_experts(name, original, result):
    """Every expert of every layer lost the same intermediate channels; routing kept its experts."""
    inits = result.report["initializers"]
    size = INTERMEDIATE[name]
    after = result.model.state_dict()  # the original class, or the GraphModule holding the same names
    for k, layer in enumerate(original.model.layers):
        p = f"model.layers.{k}.mlp."
        keep_down = inits[p + "experts.down_proj"]["2"]
        keep_up = inits[p + "experts.gate_up_proj"]["1"]  # [gate; up] halves: the same kept set in each
        assert len(keep_down) < size
        assert keep_up == keep_down + [size + i for i in keep_down]
        assert "0" not in inits[p + "experts.down_proj"] and "0" not in inits[p + "experts.gate_up_proj"]
        assert "0" not in inits.get(p + "gate.weight", {})  # the router keeps every expert
        hidden = inits[p + "experts.down_proj"].get("1")
        assert inits.get(p + "gate.weight", {}).get("1") == hidden  # it reads the experts' hidden width
        want = layer.mlp.experts.down_proj[:, :, torch.tensor(keep_down)]
        if hidden is not None:
            want = want[:, torch.tensor(hidden)]
        torch.testing.assert_close(after[p + "experts.down_proj"], want, rtol=0, atol=0)


def _no_grouped_calls_left(report):
    left = [u for u in report["torch"]["untranslated_calls"] if "grouped_mm" in u]
    assert not left, left


@pytest.fixture(scope="module")
def mixtral_zero_config():
    model, x = build_hf("mixtral")
    original = copy.deepcopy(model)
    return original, graphprune.prune(model, 0.3, example_inputs=x)


@pytest.mark.zoo
def test_mixtral_prunes_its_experts_with_zero_configuration(mixtral_zero_config):
    original, result = mixtral_zero_config
    assert result.verification.status == "exact", result.verification
    report = result.report
    _no_grouped_calls_left(report)
    assert report["params"][1] < report["params"][0]
    assert report["macs"][1] < report["macs"][0]
    _check_experts("mixtral", original, result)
    # the widths stay 8-aligned (F.grouped_mm's kernels refuse others): the class itself runs
    assert report["torch"]["returned"] == "original module", report["torch"]
    assert all(e.down_proj.shape[2] % 8 == 0 for e in _experts(result.model))
    other = example("mixtral", original.config, batch=3, length=10, seed=7)
    with torch.no_grad():
        logits = result.model(*other)
    logits = logits["logits"] if isinstance(logits, dict) else getattr(logits, "logits", logits)
    assert logits.shape[:2] == (3, 10) and torch.isfinite(logits).all()


@pytest.fixture(scope="module", params=["mixtral", "qwen2_moe"])
def hf_moe_aligned(request):
    model, x = build_hf(request.param)
    original = copy.deepcopy(model)
    return request.param, original, graphprune.prune(model, 0.3, example_inputs=x)


@pytest.mark.zoo
def test_hf_moe_keeps_its_class_and_generates(hf_moe_aligned):
    name, original, result = hf_moe_aligned
    assert result.verification.status == "exact", result.verification
    report = result.report
    _no_grouped_calls_left(report)
    assert report["torch"]["returned"] == "original module", report["torch"]
    assert type(result.model) is type(original)
    _check_experts(name, original, result)
    pruned = result.model
    for experts, old in zip(_experts(pruned), _experts(original)):
        assert experts.intermediate_dim == experts.down_proj.shape[2] < old.intermediate_dim
        assert experts.hidden_dim == experts.down_proj.shape[1]
    other = example(name, original.config, batch=3, length=10, seed=7)
    with torch.no_grad():
        logits = pruned(*other).logits
    assert logits.shape[:2] == (3, 10) and torch.isfinite(logits).all()
    prompt = example(name, original.config, batch=1, length=6, seed=3)[0]
    with torch.no_grad():
        tokens = pruned.generate(prompt, max_new_tokens=4, do_sample=False)
    assert tokens.shape == (1, 10)
