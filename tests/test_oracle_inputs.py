"""What the oracle feeds and how it compares: inputs valid for the ops that consume them,
each in its own dtype; NaN/Inf compared by position; tolerances per dtype."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune.feeds import feed_plan
from graphprune.verify import compare, relative_error, tolerance_for


def _model(nodes, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model).graph  # outputs: their inferred rank
    known = {v.name: v for v in (*inferred.value_info, *inferred.output)}
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape"):
            rank = len(known[out.name].type.tensor_type.shape.dim) if out.name in known else 0
            out.CopyFrom(vi(out.name, out.type.tensor_type.elem_type, [f"{out.name}_{k}" for k in range(rank)]))
    return model


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


F, I64 = TensorProto.FLOAT, TensorProto.INT64

# One node each whose parameter input must be valid, or onnxruntime refuses to run it.
PARAMETER_INPUTS = {
    "resize_sizes": _model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest")],
                           [vi("x", F, [1, 2, 4, 4]), vi("sizes", I64, [4])], [vi("y", F, None)]),
    "resize_scales": _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")],
                            [vi("x", F, [1, 2, 4, 4]), vi("scales", F, [4])], [vi("y", F, None)]),
    "split_sizes": _model([helper.make_node("Split", ["x", "split"], ["a", "b"], axis=1)],
                          [vi("x", F, [2, 6]), vi("split", I64, [2])], [vi("a", F, None), vi("b", F, None)]),
    "unsqueeze_axes": _model([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])],
                             [vi("x", F, [3, 4]), vi("axes", I64, [3])], [vi("y", F, None)]),
    "squeeze_axes": _model([helper.make_node("Squeeze", ["x", "axes"], ["y"])],
                           [vi("x", F, [1, 3, 1]), vi("axes", I64, [2])], [vi("y", F, None)]),
    "slice_bounds": _model([helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])],
                           [vi("x", F, [4, 5]), vi("s", I64, [2]), vi("e", I64, [2]), vi("a", I64, [2]),
                            vi("st", I64, [2])], [vi("y", F, None)]),
    "tile_repeats": _model([helper.make_node("Tile", ["x", "r"], ["y"])],
                           [vi("x", F, [2, 3]), vi("r", I64, [2])], [vi("y", F, None)]),
    "topk_k": _model([helper.make_node("TopK", ["x", "k"], ["v", "i"])],
                     [vi("x", F, [3, 4]), vi("k", I64, [1])], [vi("v", F, None), vi("i", I64, None)]),
    "nms": _model([helper.make_node("NonMaxSuppression", ["b", "s", "m", "iou", "st"], ["y"])],
                  [vi("b", F, [1, 6, 4]), vi("s", F, [1, 1, 6]), vi("m", I64, [1]), vi("iou", F, [1]),
                   vi("st", F, [1])], [vi("y", I64, None)]),
    "int_div": _model([helper.make_node("Div", ["a", "b"], ["y"])],
                      [vi("a", TensorProto.INT32, [3, 4]), vi("b", TensorProto.INT32, [3, 4])],
                      [vi("y", TensorProto.INT32, None)]),
    "uint_mod": _model([helper.make_node("Mod", ["a", "b"], ["y"])],
                       [vi("a", TensorProto.UINT16, [5]), vi("b", TensorProto.UINT16, [5])],
                       [vi("y", TensorProto.UINT16, None)]),
    "col2im": _model([helper.make_node("Col2Im", ["x", "image", "block"], ["y"])],
                     [vi("x", F, [1, 5, 6]), vi("image", I64, [2]), vi("block", I64, [2])], [vi("y", F, None)]),
    "affine_grid": _model([helper.make_node("AffineGrid", ["theta", "size"], ["y"])],
                          [vi("theta", F, [2, 2, 3]), vi("size", I64, [4])], [vi("y", F, None)], opset=20),
    "gather_rows": _model([helper.make_node("Gather", ["table", "ids"], ["y"])],
                          [vi("ids", TensorProto.INT32, [2, 3])], [vi("y", F, None)],
                          [numpy_helper.from_array(np.ones((5, 2), np.float32), "table")]),
    "reshape_target": _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                             [vi("x", F, [2, 3, 4]), vi("shape", I64, [2])], [vi("y", F, None)]),
}


@pytest.mark.parametrize("name", sorted(PARAMETER_INPUTS))
def test_parameter_inputs_get_values_the_op_accepts(name):
    model = PARAMETER_INPUTS[name]
    onnx.checker.check_model(model, full_check=True)
    result = compare(model, model)  # raises InputError when the reference cannot run
    assert result.ok and result.status == "exact"


def test_each_input_keeps_its_own_dtype_and_indices_stay_in_range():
    model = PARAMETER_INPUTS["gather_rows"]
    plan = feed_plan(model)
    for seed in range(5):
        ids = plan.values(plan.assignments()[0], seed)["ids"]
        assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 5
    values = feed_plan(PARAMETER_INPUTS["uint_mod"]).values({"a": (5,), "b": (5,)}, 0)
    assert values["a"].dtype == np.uint16 and values["b"].min() >= 1


def test_nan_and_inf_are_compared_by_position():
    e = np.array([1.0, np.nan, np.inf, -np.inf, 2.0], np.float32)
    assert relative_error(e, e.copy()) == 0.0
    assert relative_error(e, np.array([1.0, 0.0, np.inf, -np.inf, 2.0], np.float32)) == float("inf")
    assert relative_error(e, np.array([1.0, np.nan, -np.inf, -np.inf, 2.0], np.float32)) == float("inf")
    assert relative_error(e, np.array([1.0, np.nan, np.inf, -np.inf, 2.0 + 1e-3], np.float32)) > 0


def test_a_model_computing_nan_verifies():
    model = _model([helper.make_node("Log", ["x"], ["y"])], [vi("x", F, [4, 4])], [vi("y", F, [4, 4])])
    assert compare(model, model).status == "exact"  # log of negatives: NaN at the same places


@pytest.mark.parametrize("dtype,expected", [("float16", 1e-2), ("float32", 1e-4), ("float64", 1e-8),
                                            ("complex64", 1e-4)])
def test_tolerance_per_dtype(dtype, expected):
    assert tolerance_for(np.dtype(dtype), 1e-4) == expected


def test_tolerance_for_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert tolerance_for(np.dtype(ml_dtypes.bfloat16), 1e-4) == 4e-2


def test_half_precision_model_prunes_and_folds(tmp_path):
    import mutations

    model = mutations.conv_net()
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for info in (*model.graph.input, *model.graph.output):
        info.type.tensor_type.elem_type = TensorProto.FLOAT16
    result = graphprune.prune(model, ratio=0.5)
    assert result.verification.status == "exact" and result.report["params"][1] < result.report["params"][0]
    _, folded = graphprune.fold(model)
    assert folded.verification is None or folded.verification.ok


def test_prunable_model_behind_a_resize_with_sizes_input_verifies():
    """Pruning verifies where the oracle needs a valid `sizes` input to run at all
    (the input's own sizes: the pruned convs behind it see a static shape)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((6, 2, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((3, 6, 3, 3)).astype(np.float32), "w2")
    model = _model([helper.make_node("Resize", ["x", "", "", "sizes"], ["up"], mode="nearest"),
                    helper.make_node("Conv", ["up", "w1"], ["c1"], pads=[1] * 4),
                    helper.make_node("Relu", ["c1"], ["r1"]),
                    helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1] * 4)],
                   [vi("x", F, [1, 2, 4, 4]), vi("sizes", I64, [4])], [vi("y", F, None)], [w1, w2])
    result = graphprune.prune(model, ratio=0.5)
    assert result.verification.status == "exact"
    assert result.report["initializers"]["w1"]["0"] and len(result.report["initializers"]["w1"]["0"]) == 3


def test_calibration_values_bound_integer_inputs():
    """An integer input no rule understands takes the range the calibration data shows."""
    model = _model([helper.make_node("Cast", ["code"], ["f"], to=TensorProto.FLOAT),
                    helper.make_node("Sqrt", ["f"], ["y"])],
                   [vi("code", TensorProto.INT32, [4, 6])], [vi("y", F, None)])
    plan = feed_plan(model, examples=[{"code": np.array([[3, 9]], np.int32)}, {"code": np.array([[7]], np.int32)}])
    for seed in range(4):
        value = plan.values({"code": (4, 6)}, seed)["code"]
        assert value.dtype == np.int32 and value.min() >= 3 and value.max() <= 9 and len(np.unique(value)) > 1
    assert compare(model, model, examples=[{"code": np.array([[3, 9]], np.int32)}]).status == "exact"


ONNX_TYPES = [TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32,
              TensorProto.UINT32, TensorProto.INT64, TensorProto.UINT64, TensorProto.FLOAT16,
              TensorProto.BFLOAT16, TensorProto.DOUBLE, TensorProto.BOOL]


@pytest.mark.parametrize("elem", ONNX_TYPES, ids=[TensorProto.DataType.Name(t) for t in ONNX_TYPES])
def test_every_input_is_fed_in_its_own_dtype(elem):
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                   [vi("x", elem, [2, 3])], [vi("y", F, [2, 3])])
    values = feed_plan(model).values({"x": (2, 3)}, 0)["x"]
    assert values.dtype == helper.tensor_dtype_to_np_dtype(elem)
    assert compare(model, model).status == "exact"


def test_macs_of_an_unsorted_graph_are_those_of_the_sorted_one():
    import mutations

    model = mutations.conv_net()
    shuffled = mutations.conv_net()
    mutations.shuffle_nodes(shuffled, np.random.default_rng(5))
    assert [n.name for n in shuffled.graph.node] != [n.name for n in model.graph.node]
    assert graphprune.inspect(shuffled)["macs"] == graphprune.inspect(model)["macs"] > 0


def test_bfloat16_outputs_are_read_and_compared_at_their_own_tolerance():
    def model(scale):
        return _model([helper.make_node("Mul", ["x", "s"], ["xs"]),
                       helper.make_node("Cast", ["xs"], ["h"], to=TensorProto.BFLOAT16),
                       helper.make_node("Transpose", ["h"], ["y"], perm=[1, 0])],
                      [vi("x", F, [2, 3])], [vi("y", TensorProto.BFLOAT16, [3, 2])],
                      [numpy_helper.from_array(np.float32(scale), "s")])

    result = compare(model(1.0), model(1.0))
    assert result.status == "exact" and result.outputs == {"y": 0.0}
    assert compare(model(1.0), model(1.01)).status == "exact"  # within bfloat16's tolerance
    assert compare(model(1.0), model(1.5)).status == "failed"  # another function: caught
