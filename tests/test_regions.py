"""Region-by-region sessions (graphprune.regions) and verification through them."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune import regions, verify
from graphprune.models.llama_onnx import SHAPES, build


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """The tiny LLaMA graph (2 layers, GQA, RMSNorm), fp32, weights in external data."""
    path = tmp_path_factory.mktemp("llama") / "tiny.onnx"
    return build(SHAPES["tiny"], str(path), dtype="fp32")


def _ids(batch=2, length=12, seed=0):
    return np.random.default_rng(seed).integers(0, SHAPES["tiny"].vocab, (batch, length)).astype(np.int64)


def _whole(path, names, feeds):
    model = onnx.load(path)
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names
                              if n not in {o.name for o in model.graph.output})
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(names, feeds)


def test_partition_respects_the_budget_and_covers_every_node_once(llama):
    model = graphprune.api.read_model(llama)
    budget = 300_000
    parts = regions.partition(model, budget)
    assert len(parts) > 5
    assert sorted(i for r in parts for i in r.nodes) == list(range(len(model.graph.node)))
    sizes = {t.name: regions.tensor_bytes(t) for t in model.graph.initializer}
    for r in parts:
        held = sum(sizes[t] for t in r.initializers)
        assert held <= budget or len(r.initializers) == 1  # one tensor larger than the budget stands alone
    widened = regions.partition(model, budget, widen=TensorProto.DOUBLE)
    assert len(widened) > len(parts)  # float64 copies are twice the bytes: smaller regions


def test_region_chain_computes_what_one_session_computes(llama):
    model = graphprune.api.read_model(llama)
    opts = ort.SessionOptions()
    chain = regions.RegionSession(model, opts, budget=200_000)
    names = ["logits", "model.layers.0.mlp_residual", "model.layers.1.q"]
    feeds = {"input_ids": _ids()}
    got = chain.run(names, feeds)
    assert len(chain.regions(names)) > 5
    for want, have in zip(_whole(llama, names, feeds), got):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)
    assert [o.name for o in chain.get_outputs()] == ["logits"]
    assert [i.name for i in chain.get_inputs()] == ["input_ids"]


def test_region_chain_passes_outer_scope_values_into_subgraphs():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    branch = lambda op: helper.make_graph(  # noqa: E731
        [helper.make_node(op, ["xs", "w"], ["out"])], op, [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])])
    nodes = [helper.make_node("Mul", ["x", "w"], ["xs"]),
             helper.make_node("ReduceSum", ["xs"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["y"], then_branch=branch("Add"), else_branch=branch("Sub"))]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              initializer=[w, numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    chain = regions.RegionSession(model, ort.SessionOptions(), budget=0)  # one node per region
    assert len(chain.regions()) == 4
    for value in (np.ones(4, np.float32), -np.ones(4, np.float32)):
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": value})[0]
        np.testing.assert_array_equal(chain.run(None, {"x": value})[0], want)


@pytest.fixture
def force_regions(monkeypatch):
    """Every model runs region by region, in regions of at most ~128 KB of weights."""
    monkeypatch.setattr(regions, "SESSION_BYTES", 0)
    monkeypatch.setattr(regions, "REGION_BYTES", 1 << 17)


def test_prune_verifies_region_by_region(llama, force_regions, monkeypatch):
    calls = []
    original_run = regions.RegionSession.run
    monkeypatch.setattr(regions.RegionSession, "run",
                        lambda self, names, feeds: calls.append(len(self.regions(names))) or
                        original_run(self, names, feeds))
    result = graphprune.prune(llama, ratio=0.25, exact=True, input_shapes={"input_ids": (1, 8)})
    assert result.verification.status == "exact"
    assert calls and min(calls) > 5  # the oracle, the result and the float64 oracle ran in regions
    assert result.verification.max_relative_error < 1e-4


def test_region_verification_catches_a_wrong_result(llama, force_regions):
    """The same corruption that fails the one-session check fails the region check."""
    result = graphprune.prune(llama, ratio=0.25, exact=True, verify=False)
    source = graphprune.api.read_model(llama)
    wrong = onnx.ModelProto()
    wrong.CopyFrom(result.model)
    for t in wrong.graph.initializer:
        if t.name == "model.layers.1.mlp.down_proj.weight":
            value = np.array(numpy_helper.to_array(t) if t.data_location != TensorProto.EXTERNAL
                             else graphprune.weights.tensor_array(t))
            t.CopyFrom(numpy_helper.from_array(value[::-1].copy(), t.name))  # rows in the wrong order
    check = verify.verify_prune(source, wrong, result.plan, input_shapes={"input_ids": (1, 8)})
    assert check.status == "failed"
    good = verify.verify_prune(source, result.model, result.plan, input_shapes={"input_ids": (1, 8)})
    assert good.status == "exact"


def test_half_precision_noise_floor_runs_in_float32(tmp_path):
    path = build(SHAPES["tiny"], str(tmp_path / "half.onnx"), dtype="fp16")
    model = graphprune.api.read_model(path)
    assert verify.widened_type(model) == TensorProto.FLOAT
    wide = verify.as_float64(model, TensorProto.FLOAT)
    assert {t.data_type for t in wide.graph.initializer if t.data_type in regions.FLOATS} == {TensorProto.FLOAT}
    single = build(SHAPES["tiny"], str(tmp_path / "single.onnx"), dtype="fp32")
    assert verify.widened_type(onnx.load(single)) == TensorProto.DOUBLE
    from graphprune.feeds import feed_plan

    runs = verify._run_reference(verify.reference_session(model), feed_plan(model, {"input_ids": (1, 8)}), 0)
    assert 0 < verify._noise_floor(model, {}, runs[0]) < 1e-2  # fp16 against its float32 copy
    result = graphprune.prune(path, ratio=0.25, exact=True, input_shapes={"input_ids": (1, 8)})
    assert result.verification.status == "exact"
