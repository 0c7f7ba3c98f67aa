"""fold-constants: shape chains, weight preprocessing, the size cap, what stays, real exports."""

import io
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from graphprune import models
from graphprune.frontends.onnx import load_onnx
from graphprune.passes import PASSES, Pipeline
from graphprune.passes.fold_constants import FoldConstants
from lossless import F, const, make, run_lossless, vi  # noqa: F401  (shared builders)

def run(proto, **options):
    return run_lossless(FoldConstants, proto, **options)


def ops(graph):
    return [n.op for n in graph.nodes]


def test_shape_chain_becomes_reshape_target():
    proto = make([helper.make_node("Shape", ["x"], ["s"]),
                  helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
                  helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
                  helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
                  helper.make_node("Reshape", ["x", "target"], ["y"])],
                 [vi("x", [2, 3, 4])], [vi("y", [2, 12])],
                 [const("zero", np.int64(0)), const("axes", [0]), const("minus1", [-1])])
    graph, result = run(proto)
    assert ops(graph) == ["Reshape"]
    assert graph.constants["target"].tolist() == [2, -1]
    assert {t for t, _ in graph.folded["target"]} == {"x"}  # size-derived: the pruner must know
    assert result.details["folded_by_op"] == {"Concat": 1, "Gather": 1, "Shape": 1, "Unsqueeze": 1}
    assert set(graph.constants) == {"target"}  # intermediates and their inputs are gone


def test_weight_transpose_and_cast_fold_and_free_the_source():
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float16)
    proto = make([helper.make_node("Cast", ["w"], ["w32"], to=F),
                  helper.make_node("Transpose", ["w32"], ["wt"], perm=[1, 0]),
                  helper.make_node("MatMul", ["x", "wt"], ["y"])],
                 [vi("x", [2, 4])], [vi("y", [2, 3])], [const("w", w.T.copy())])
    graph, result = run(proto)
    assert ops(graph) == ["MatMul"]
    assert np.array_equal(graph.constants["wt"], w.astype(np.float32))
    assert "w" not in graph.constants and "w32" not in graph.constants
    assert result.details["constants"]["orphans_removed"] == 2


def test_a_tied_weight_is_not_copied_by_folding_its_transpose():
    """The embedding read by Gather and, transposed, by the output MatMul (a tied LM head, as
    torch.export writes it): folding the Transpose would store the biggest weight twice."""
    w = np.random.default_rng(0).standard_normal((700, 400)).astype(np.float32)
    proto = make([helper.make_node("Gather", ["w", "ids"], ["e"], axis=0),
                  helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
                  helper.make_node("MatMul", ["e", "wt"], ["y"])],
                 [vi("ids", [2], onnx.TensorProto.INT64)], [vi("y", [2, 700])], [const("w", w)])
    graph = load_onnx(proto)
    assert ops(graph) == ["Gather", "Transpose", "MatMul"] and "wt" not in graph.constants
    untied = make([helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
                   helper.make_node("MatMul", ["x", "wt"], ["y"])],
                  [vi("x", [2, 400])], [vi("y", [2, 700])], [const("w", w)])
    assert ops(load_onnx(untied)) == ["MatMul"]  # the only reader: folding frees the source


@pytest.mark.parametrize("op, extra", [("ConstantOfShape", []), ("Tile", ["reps"])])
def test_size_cap(op, extra):
    """A fold that would grow the file stays (with its reason) unless the cap is raised."""
    if op == "ConstantOfShape":
        node = helper.make_node(op, ["shape"], ["big"], value=numpy_helper.from_array(np.ones(1, np.float32)))
        inits = [const("shape", [600, 600])]
    else:
        node = helper.make_node(op, ["w", "reps"], ["big"])
        inits = [const("w", np.ones((3, 3), np.float32)), const("reps", [200, 200])]
    proto = make([node, helper.make_node("Add", ["x", "big"], ["y"])],
                 [vi("x", [600, 600])], [vi("y", [600, 600])], inits)
    graph = load_onnx(proto, fold_shapes=False)
    result = FoldConstants()(graph)
    assert not result.modified and len(graph.nodes) == 2
    assert "exceeds max_elements=262144" in result.details["skipped"][0]["reason"]
    graph, result = run(proto, max_elements=400_000)
    assert ops(graph) == ["Add"] and graph.constants["big"].shape == (600, 600)


def test_small_constant_of_shape_folds():
    proto = make([helper.make_node("ConstantOfShape", ["shape"], ["c"],
                                   value=numpy_helper.from_array(np.full(1, 2.0, np.float32))),
                  helper.make_node("Mul", ["x", "c"], ["y"])],
                 [vi("x", [2, 3])], [vi("y", [2, 3])], [const("shape", [2, 3])])
    graph, _ = run(proto)
    assert ops(graph) == ["Mul"] and graph.constants["c"].tolist() == [[2.0] * 3] * 2


def test_dequantize_linear_kept_unless_asked():
    q = np.arange(-6, 6, dtype=np.int8).reshape(4, 3)
    proto = make([helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["w"]),
                  helper.make_node("MatMul", ["x", "w"], ["y"])],
                 [vi("x", [2, 4])], [vi("y", [2, 3])],
                 [const("q", q), const("scale", np.float32(0.5)), const("zp", np.int8(1))], opset=19)
    graph = load_onnx(proto, fold_shapes=False)
    result = FoldConstants()(graph)
    assert not result.modified
    assert [s["reason"] for s in result.details["skipped"]] == ["DequantizeLinear is kept by option keep_ops"]
    # Folded on request, the weight is exactly (q - zp) * scale, but the model no longer
    # matches onnxruntime, which runs DequantizeLinear -> MatMul as a fused quantized kernel
    # (relative difference ~1e-3): one more reason DequantizeLinear stays by default.
    graph = load_onnx(proto, fold_shapes=False)
    assert FoldConstants(keep_ops="")(graph).modified
    assert ops(graph) == ["MatMul"]
    assert np.array_equal(graph.constants["w"], (q.astype(np.float32) - 1) * 0.5)


def test_nondeterministic_and_runtime_values_stay():
    """Random ops, Shape of a dynamic tensor and overridable initializers are not constants."""
    proto = make([helper.make_node("RandomUniformLike", ["c"], ["r"], name="random"),
                  helper.make_node("Shape", ["x"], ["s"], name="dynamic_shape"),
                  helper.make_node("Cast", ["s"], ["sf"], to=F),
                  helper.make_node("Neg", ["o"], ["on"], name="overridable"),
                  helper.make_node("Sum", ["r", "sf", "on"], ["y"])],
                 [vi("x", ["N", 2]), vi("o", [2])], [vi("y", [2])],
                 [const("c", np.zeros(2, np.float32)), const("o", np.ones(2, np.float32))])
    graph = load_onnx(proto, fold_shapes=False)
    result = FoldConstants()(graph)
    assert not result.modified and len(graph.nodes) == 5
    assert result.details["skipped"] == [{"node": "random", "op": "RandomUniformLike",
                                          "reason": "RandomUniformLike is nondeterministic"}]


def test_registered_with_options():
    assert PASSES["fold-constants"] is FoldConstants
    folder = FoldConstants.from_options({"max-elements": "10", "keep_ops": "DequantizeLinear,Tile"})
    assert folder.max_elements == 10 and folder.keep_ops == "DequantizeLinear,Tile"


@pytest.mark.parametrize("name", ["mha_block", "resnet18", "tiny_cnn"])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_real_exports_exact(name, exporter):
    graph, result = run(onnx.load(models.export_onnx(name, exporter)))
    assert result.nodes[1] <= result.nodes[0]


def test_unfolded_torch_export_folds_to_the_optimised_graph():
    """The legacy exporter without its own constant folding leaves weight transposes and
    Unsqueeze/Concat shape chains; folding them gives the exporter's optimised node count."""
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(models.build("mha_block"), (models.example_input("mha_block"),), buffer,
                          dynamo=False, do_constant_folding=False, opset_version=17)
    proto = onnx.load_from_string(buffer.getvalue())
    graph, result = run(proto)
    optimised = load_onnx(models.export_onnx("mha_block", "legacy"))
    assert len(graph.nodes) == len(optimised.nodes) < result.nodes[0]
    assert result.details["folded_by_op"]["Transpose"] == 4
    assert graph.param_count() == optimised.param_count()
    # the whole lossless cleanup, to a fixed point, is exact and settles
    cleanup = Pipeline([PASSES[p]() for p in ("fold-constants", "remove-identities", "dedup", "dce")],
                       fixed_point=True)
    outcome = cleanup(load_onnx(proto, fold_shapes=False), verify=True)
    assert outcome.nodes == (result.nodes[0], len(optimised.nodes))
    assert not any(r.modified for r in outcome.children[-4:])
