"""End-to-end pruning of nn.Modules: what a user who fine-tunes afterwards relies on."""

from __future__ import annotations

import copy
import io

import numpy as np
import onnx
import pytest
import torch
import torchvision
from torch import nn

import graphprune
from graphprune.errors import InputError, PlanError, VerificationError
from graphprune.models.torch_zoo import build_torch
from graphprune.verify import Verification, session


def _run_ort(model: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    return session(model).run(None, {model.graph.input[0].name: x.numpy()})[0]


def _export(model, x, dynamo: bool) -> onnx.ModelProto:
    if dynamo:
        return torch.onnx.export(model, (x,), dynamo=True, verbose=False).model_proto
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, do_constant_folding=False)
    return onnx.load_from_string(buffer.getvalue())


@pytest.fixture
def resnet():
    return build_torch("resnet18")


def test_resnet_is_sliced_in_place_and_keeps_its_class(resnet):
    model, x = resnet
    before = sum(p.numel() for p in model.parameters())
    state_names = set(model.state_dict())
    result = graphprune.prune(model, 0.5, example_inputs=x)
    assert result.model is model and isinstance(model, torchvision.models.ResNet)
    assert result.verification.status == "exact"
    assert result.report["torch"]["tracer"] == "symbolic_trace"
    assert sum(p.numel() for p in model.parameters()) == result.report["params"][1] < before
    assert set(result.report["initializers"]) <= state_names  # keyed by state_dict names
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.out_channels == m.weight.shape[0]
            assert m.in_channels == m.weight.shape[1] * m.groups
        elif isinstance(m, nn.BatchNorm2d):
            assert m.num_features == m.weight.shape[0] == m.running_mean.shape[0]
        elif isinstance(m, nn.Linear):
            assert (m.out_features, m.in_features) == tuple(m.weight.shape) and m.out_features == 1000
    assert model(x).shape == (1, 1000)


def test_pruned_module_trains_and_its_state_dict_round_trips():
    model, x = build_torch("mobilenet_v3_small")
    result = graphprune.prune(model, 0.5, example_inputs=x)
    pruned = result.model
    pruned.train()
    batch = torch.randn(2, *x.shape[1:])
    loss = nn.functional.cross_entropy(pruned(batch), torch.tensor([1, 2]))
    loss.backward()
    for name, p in pruned.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and torch.isfinite(p.grad).all(), name
    pruned.eval()
    clone = copy.deepcopy(pruned)
    with torch.no_grad():
        for p in clone.parameters():
            p.zero_()
    clone.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), pruned(x))


def test_pruned_module_exports_to_onnx_and_matches(resnet):
    model, x = resnet
    result = graphprune.prune(model, 0.5, example_inputs=x)
    exported = _export(result.model, x, dynamo=False)
    with torch.no_grad():
        expected = result.model(x).numpy()
    np.testing.assert_allclose(_run_ort(exported, x), expected, rtol=1e-4, atol=1e-4)


def _tiny_vit():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=48, mlp_dim=64, num_classes=10).eval()
    return model, torch.randn(1, 3, 32, 32)


def test_vit_literal_sizes_give_a_graph_module_and_stale_attributes():
    """torchvision's ViT reshapes with ``self.hidden_dim``: the class cannot run pruned."""
    model, x = _tiny_vit()
    result = graphprune.prune(model, 0.5, example_inputs=x)
    info = result.report["torch"]
    assert isinstance(result.model, torch.fx.GraphModule)
    assert info["returned"] == "torch.fx.GraphModule"
    stale = info["stale_attributes"]
    assert "VisionTransformer.hidden_dim = 48 (the pruned graph uses 24)" in stale, stale
    assert any(s.startswith("encoder.layers.encoder_layer_0.self_attention.embed_dim = 48") for s in stale)
    assert not any(".mlp." in s for s in stale)  # Linear sizes were updated from their weights
    assert result.verification.status == "exact"  # LayerNorm statistics taken over kept channels
    assert "conv_proj.weight" in result.report["initializers"]
    assert result.model(x).shape == (1, 10)
    out = result.model(torch.randn(1, 3, 32, 32)).sum()
    out.backward()
    assert all(p.grad is not None for p in result.model.parameters() if p.requires_grad)


def _small_swin(v2=False):
    torch.manual_seed(0)
    kwargs = dict(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                  num_classes=10)
    if v2:
        from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2
        kwargs.update(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)
    return torchvision.models.SwinTransformer(**kwargs).eval(), torch.randn(1, 3, 32, 32)


@pytest.mark.parametrize("v2", [False, True])
def test_small_swin_goes_through_torch_export_and_prunes_heads(v2):
    model, x = _small_swin(v2)
    result = graphprune.prune(model, 0.5, example_inputs=x)
    assert result.report["torch"]["tracer"] == "torch.export"  # symbolic trace leaves wrapped calls
    assert result.report["torch"]["untranslated_calls"] == []
    assert result.verification.status == "exact"  # LayerNorm statistics over kept channels (masked_norms)
    assert result.report["macs"][1] < result.report["macs"][0]
    assert result.model(x).shape == (1, 10)
    if v2:  # the continuous position bias MLP and the logit scale lose the pruned head
        assert len(result.report["initializers"]["features.1.0.attn.cpb_mlp.2.weight"]["0"]) == 1
        assert len(result.report["initializers"]["features.1.0.attn.logit_scale"]["0"]) == 1
    else:  # 2 heads -> 1: the bias table loses the pruned head
        assert len(result.report["initializers"]["features.1.0.attn.relative_position_bias_table"]["1"]) == 1


@pytest.mark.parametrize("v2", [False, True])
def test_small_swin_heads_and_mlp_alone_verify_exactly(v2):
    """With the LayerNorm'd residual stream kept, what remains pruned (heads, MLP width) is exact."""
    model, x = _small_swin(v2)
    result = graphprune.prune(model, 0.5, example_inputs=x, keep=r"^(features\.\d+\.(\d+\.)?)?norm")
    assert result.verification.status == "exact", result.verification.message
    qkv = result.report["initializers"]["features.1.0.attn.qkv.weight"]
    assert list(qkv) == ["0"] and len(qkv["0"]) == 3 * 8  # q, k, v rows of the one kept head


def _bn_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.01, 0.3, 0.02, 0.2, 0.03, 0.5, 0.005, 0.4]))
        net[0].weight[[0, 2, 4, 6]] *= 10.0  # big conv rows: l2 keeps exactly the small-gamma channels
    return net, torch.randn(1, 3, 8, 8)


def test_bn_scale_keeps_the_largest_gammas_where_l2_does_not():
    net, x = _bn_net()
    l2 = graphprune.prune(copy.deepcopy(net), 0.5, example_inputs=x, importance="l2")
    slim = graphprune.prune(net, 0.5, example_inputs=x, importance="bn_scale")
    assert slim.report["initializers"]["1.weight"]["0"] == [1, 3, 5, 7]
    assert l2.report["initializers"]["1.weight"]["0"] == [0, 2, 4, 6]
    assert slim.verification.status == "exact"


def test_taylor_keeps_the_channels_with_the_largest_weight_times_gradient():
    net, x = _bn_net()
    target = torch.randn(1, 5, generator=torch.Generator().manual_seed(3))
    loss_fn = lambda out: ((out - target) ** 2).sum()  # noqa: E731
    reference = copy.deepcopy(net)
    loss_fn(reference(x)).backward()
    conv, bn, consumer = reference[0], reference[1], reference[3]
    score = sum((p * p.grad).abs().reshape(8, -1).sum(1) for p in (conv.weight, conv.bias, bn.weight, bn.bias))
    score = score + (consumer.weight * consumer.weight.grad).abs().sum((0, 2, 3))
    expected = sorted(torch.topk(score, 4).indices.tolist())

    result = graphprune.prune(net, 0.5, example_inputs=x, importance="taylor", loss_fn=loss_fn)
    assert result.verification.status == "exact"
    assert result.report["initializers"]["0.weight"]["0"] == expected
    assert all(p.grad is None for p in result.model.parameters())  # scoring leaves no gradients behind


def test_the_noise_floor_is_measured_only_when_the_fixed_tolerance_is_exceeded(resnet, monkeypatch):
    """The float64 oracle runs only when float32 rounding could explain a failure, on the weights
    as they were before slicing (the snapshot shares them, emission replaced them)."""
    model, x = resnet
    # computed over kept channels a conv's oracle is the pruned conv's own arithmetic (error 0.0);
    # zeroed inputs sum in another order, so rounding shows
    monkeypatch.setattr("graphprune.verify_torch._over_kept", lambda *a: None)
    plain = graphprune.prune(copy.deepcopy(model), 0.5, example_inputs=x)
    assert plain.verification.status == "exact" and plain.report["torch"]["noise_floor"] == 0.0
    strict = graphprune.prune(model, 0.5, example_inputs=x, tolerance=1e-12)
    check = strict.verification
    assert check.status == "exact" and 1e-9 < check.noise_floor < 1e-5
    assert check.tolerance == pytest.approx(16 * check.noise_floor)
    assert check.tolerance > check.max_relative_error > 1e-12
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the float64 copy was private
    assert plain.report["params"] == strict.report["params"]


def test_failed_verification_restores_the_module(resnet, monkeypatch):
    model, x = resnet
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)
    monkeypatch.setattr("graphprune.torch_prune.compare_outputs",
                        lambda *a, **k: Verification("failed", message="forced"))
    with pytest.raises(VerificationError, match="forced"):
        graphprune.prune(model, 0.5, example_inputs=x)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert all(m.out_channels == m.weight.shape[0] for m in model.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torch_plan_replays_on_the_onnx_export(name):
    """``graphprune prune model.onnx --plan report.json`` equals exporting the pruned module."""
    model, x = build_torch(name)
    original = _export(model, x, dynamo=True)  # the exporter folds BN: bn names are skipped
    result = graphprune.prune(model, 0.5, example_inputs=x)
    replayed = graphprune.prune(original, plan=result.report)
    assert replayed.verification.status == "exact"
    assert any(".bn" in s or "bn1" in s or ".1.weight" in s for s in replayed.report["plan_skipped"])
    np.testing.assert_allclose(_run_ort(replayed.model, x), _run_ort(_export(result.model, x, True), x),
                               rtol=1e-4, atol=1e-5)


def test_onnx_plan_replays_on_the_module(resnet):
    model, x = resnet
    onnx_result = graphprune.prune(_export(model, x, dynamo=False), 0.5)
    torch_result = graphprune.prune(model, example_inputs=x, plan=onnx_result.report)
    assert torch_result.report["initializers"] == {
        k: v for k, v in onnx_result.report["initializers"].items() if k in model.state_dict()}
    with torch.no_grad():
        np.testing.assert_allclose(torch_result.model(x).numpy(), _run_ort(onnx_result.model, x),
                                   rtol=1e-4, atol=1e-5)


def test_a_plan_for_another_model_is_refused(resnet):
    model, x = resnet
    other, other_x = build_torch("mobilenet_v3_small")
    plan = graphprune.prune(other, 0.5, example_inputs=other_x).report
    with pytest.raises(PlanError):
        graphprune.prune(model, example_inputs=x, plan=plan)


def test_bad_arguments_name_the_fix(resnet):
    model, x = resnet
    with pytest.raises(InputError, match="example_inputs"):
        graphprune.prune(model, 0.5)
    with pytest.raises(InputError, match="unknown importance"):
        graphprune.prune(model, 0.5, example_inputs=x, importance="fisher")
    with pytest.raises(InputError, match="regular expression"):
        graphprune.prune(model, 0.5, example_inputs=x, keep="(")


def test_keep_pins_matching_parameters(resnet):
    model, x = resnet
    result = graphprune.prune(model, 0.5, example_inputs=x, keep=r"^layer4\.")
    assert not any(name.startswith("layer4.") for name in result.report["initializers"])
    assert any(name.startswith("layer3.") for name in result.report["initializers"])


def test_an_error_while_emitting_leaves_the_module_untouched(resnet, monkeypatch):
    model, x = resnet
    shapes = {k: v.shape for k, v in model.state_dict().items()}

    def broken(*args, **kwargs):
        raise RuntimeError("emitter bug")
    monkeypatch.setattr("graphprune.emit.torch._rewrite_literals", broken)
    with pytest.raises(RuntimeError, match="emitter bug"):
        graphprune.prune(model, 0.5, example_inputs=x)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert all(m.in_channels == m.weight.shape[1] for m in model.modules() if isinstance(m, nn.Conv2d))


def test_pruning_a_module_outside_hugging_face_does_not_import_transformers():
    """Telling a Hugging Face model apart must not import transformers (about 2 s on every first
    prune of a torchvision model, when it did)."""
    import subprocess
    import sys

    code = ("import sys, torch, torchvision, graphprune\n"
            "m = torchvision.models.resnet18(num_classes=10).eval()\n"
            "graphprune.prune(m, 0.5, example_inputs=torch.randn(1, 3, 32, 32))\n"
            "print('transformers' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
