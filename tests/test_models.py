"""Real models, both exporters: prune at 0.5, oracle exact, fewer MACs, valid ONNX.

The default run keeps a representative handful; ``-m zoo`` sweeps the whole
core list of the issue.
"""

import numpy as np
import onnx
import pytest

import graphprune
from graphprune import models

FAST = [("resnet18", "legacy"), ("resnet18", "dynamo"), ("mobilenet_v2", "dynamo"),
        ("mha_block", "legacy"), ("mha_block", "dynamo"), ("vit_block", "dynamo"),
        ("tiny_concat", "legacy"), ("tiny_grouped", "dynamo"), ("tiny_flatten", "legacy")]
ZOO = [(name, exporter) for name in models.CORE_MODELS for exporter in models.EXPORTERS]


def check_pruned(path):
    original = onnx.load(str(path))
    result = graphprune.prune(path, ratio=0.5)
    report = result.report
    assert result.verification.status == "exact", result.verification.message
    assert report["verification"]["max_relative_error"] < 1e-4
    assert report["macs"][1] < report["macs"][0]
    assert report["params"][1] < report["params"][0]
    assert report["groups"] and all(g["removed"] > 0 for g in report["groups"])
    onnx.checker.check_model(result.model, full_check=True)
    # every sliced initializer has exactly its kept indices, in range and ascending
    before = {t.name: t for t in original.graph.initializer}
    after = {t.name: t for t in result.model.graph.initializer}
    for name, axes in report["initializers"].items():
        for axis, kept in axes.items():
            kept = np.asarray(kept)
            assert np.all(np.diff(kept) > 0)
            if name in before:
                assert kept[-1] < before[name].dims[int(axis)]
            if name in after:
                assert after[name].dims[int(axis)] == len(kept)
    return result


@pytest.mark.parametrize("name,exporter", FAST)
def test_prune_model(export, name, exporter):
    check_pruned(export(name, exporter))


_PRUNED: dict = {}


def pruned(export, name, exporter):
    """The zoo prune of (name, exporter), checked once and shared by the tests of the pair."""
    if (name, exporter) not in _PRUNED:
        _PRUNED[name, exporter] = check_pruned(export(name, exporter))
    return _PRUNED[name, exporter]


@pytest.mark.zoo
@pytest.mark.parametrize("name,exporter", ZOO)
def test_prune_zoo(export, name, exporter):
    pruned(export, name, exporter)


@pytest.mark.zoo
@pytest.mark.parametrize("name,exporter", ZOO)
def test_pruned_zoo_matches_in_openvino(export, name, exporter):
    """The pruned model loads in OpenVINO and computes what onnxruntime computes (float32)."""
    pytest.importorskip("openvino")
    from graphprune.bench import compare_openvino

    check = compare_openvino(pruned(export, name, exporter).model)
    assert check["ok"], check["message"]


def test_attention_prunes_whole_heads(export):
    path = export("mha_block", "dynamo")
    block = models.build("mha_block")
    heads, head_dim = block.num_heads, block.head_dim
    result = graphprune.prune(path, ratio=0.5)
    (group,) = result.report["groups"]
    assert (group["channels"], group["removed"]) == (heads, heads // 2)
    sliced = [axes for axes in result.report["initializers"].values()]
    for axes in sliced:
        for kept in axes.values():
            blocks = np.asarray(kept).reshape(-1, head_dim)  # whole heads: runs of head_dim
            assert np.all(blocks % head_dim == np.arange(head_dim))
            assert np.all(np.diff(blocks, axis=1) == 1)


def test_residual_group_spans_downsample_and_classifier(export):
    """ResNet's residual stream: block convs, the downsample conv and fc share one group."""
    analysis = graphprune.analyse_model(export("resnet18", "dynamo"))
    group = analysis.group_of_dim("fc.weight", 1)
    assert group is not None and group.prunable
    names = {analysis.table.keys[d][0] for d in analysis.constant_dims(group)}
    assert {"layer4.0.downsample.0.weight", "layer4.1.conv2.weight", "fc.weight"} <= names
    assert analysis.group_of_dim("fc.weight", 0).pinned == "graph output 'output'"


def _export_dynamic(name):
    import contextlib
    import io
    import warnings

    import torch

    module, example = models.build(name), models.example_input(name)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=["input"],
                          output_names=["output"],
                          dynamic_axes={"input": {0: "batch", 1: "tokens"}, "output": {0: "batch", 1: "tokens"}})
    return onnx.load_from_string(buffer.getvalue())


def test_attention_with_dynamic_axes_prunes_heads():
    """Run-time reshape targets (Shape→Gather→Concat) are rewritten, not pinned."""
    model = _export_dynamic("mha_block")
    assert any(n.op_type == "Shape" for n in model.graph.node)
    result = graphprune.prune(model, ratio=0.5)
    assert result.verification.status == "exact"
    (group,) = result.report["groups"]
    assert group["removed"] == group["channels"] // 2
    onnx.checker.check_model(result.model, full_check=True)
