"""Translation (``frontends/fx_ops.py``) and emission (``emit/torch.py``) of each fx handler family.

Every test builds a tiny module whose channels should be prunable *through* the op under test,
prunes it at ratio 0.5 and checks, besides graphprune's own oracle verification:

* the named parameters really shrank, and each is exactly the original indexed by its kept list;
* the returned model runs and gives the original output shape;
* for a few networks, the output equals the *original* model with the removed channels zeroed
  at their consumers (an oracle independent of graphprune's masked interpreter).
"""

from __future__ import annotations

import copy
import operator

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

import graphprune
from graphprune.errors import VerificationError

# -- helpers ---------------------------------------------------------------------------------------

def _inputs(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def kept(result, name: str, axis: int) -> list[int]:
    return result.report["initializers"][name][str(axis)]


def removed(result, name: str, axis: int, size: int) -> list[int]:
    keep = set(kept(result, name, axis))
    return [i for i in range(size) if i not in keep]


def prune(model: nn.Module, x, status: str = "exact", **kwargs):
    """Prune ``model`` at 0.5 and check what every test relies on; returns (result, original copy)."""
    model.eval()
    xs = _inputs(x)
    original = copy.deepcopy(model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = original(*xs)
    result = graphprune.prune(model, 0.5, example_inputs=x, **kwargs)
    assert result.verification.status == status, result.verification
    report = result.report
    assert report["initializers"], "nothing was pruned"
    assert report["params"][1] < report["params"][0], report["params"]
    assert report["params"][1] == sum(p.numel() for p in result.model.parameters())
    assert report["macs"][1] <= report["macs"][0]
    after = result.model.state_dict()
    for name, axes in report["initializers"].items():
        assert name in before, f"report names '{name}', not a state_dict entry"
        if name not in after:  # a GraphModule only holds what the forward uses
            continue
        want = before[name]
        for axis, keep in axes.items():
            assert keep == sorted(set(keep)) and len(keep) < before[name].shape[int(axis)], (name, axis)
            want = want.index_select(int(axis), torch.tensor(keep, dtype=torch.long))
        assert after[name].shape == want.shape, (name, after[name].shape, want.shape)
        torch.testing.assert_close(after[name], want, rtol=0, atol=0, msg=name)
    for name, value in before.items():
        if name not in report["initializers"] and name in after:
            assert after[name].shape == value.shape, f"'{name}' changed shape but is not reported"
    with torch.no_grad():
        got = result.model(*xs)
    assert got.shape == expected.shape
    assert torch.isfinite(got).all()
    return result, original


def zeroed(original: nn.Module, result, consumers: dict[str, int]) -> nn.Module:
    """``original`` with the channels the prune removed zeroed where ``consumers`` read them."""
    model = copy.deepcopy(original)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, axis in consumers.items():
            gone = removed(result, name, axis, params[name].shape[axis])
            assert gone, f"nothing removed from {name} axis {axis}"
            params[name].index_fill_(axis, torch.tensor(gone), 0.0)
    return model


def _set_mode(model: nn.Module, training: bool) -> None:
    try:
        model.train(training)
    except NotImplementedError:  # torch.export's modules keep their traced (eval) mode
        pass


def assert_trains(model: nn.Module, x) -> None:
    """A training step works: every parameter gets a finite gradient of its (new) shape."""
    _set_mode(model, True)
    model.zero_grad(set_to_none=True)
    out = model(*_inputs(x))
    (out.float() ** 2).mean().backward()
    params = list(model.named_parameters())
    assert params
    for name, p in params:
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.shape == p.shape, name
        assert torch.isfinite(p.grad).all(), name
    model.zero_grad(set_to_none=True)
    _set_mode(model, False)


def assert_state_dict_round_trips(model: nn.Module, x) -> None:
    state = model.state_dict()
    model.load_state_dict(state, strict=True)  # loads into itself
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(1.0)
    clone.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(clone(*_inputs(x)), model(*_inputs(x)))


def _randomize_bn(bn: nn.modules.batchnorm._BatchNorm) -> None:
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)


# -- contractions: conv, linear --------------------------------------------------------------------

def conv_bn_relu_conv():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    _randomize_bn(net[1])
    return net.eval(), torch.randn(2, 3, 6, 6)


def test_conv_bn_relu_conv_matches_the_zeroed_original():
    net, x = conv_bn_relu_conv()
    result, original = prune(net, x)
    assert result.model is net and result.report["torch"]["returned"] == "original module"
    assert result.report["torch"]["tracer"] == "symbolic_trace"
    assert result.report["torch"]["untranslated_calls"] == []
    keep = kept(result, "0.weight", 0)
    assert len(keep) == 4
    for name in ("0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
        assert kept(result, name, 0) == keep, name
    assert kept(result, "3.weight", 1) == keep
    assert "1" not in result.report["initializers"]["0.weight"]  # the input channels are the input's
    assert "0" not in result.report["initializers"]["3.weight"]  # the output channels are the output's
    assert (net[0].out_channels, net[1].num_features, net[3].in_channels) == (4, 4, 4)
    # independent oracle: the original network with the removed channels zeroed at the last conv
    reference = zeroed(original, result, {"3.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), rtol=1e-5, atol=1e-5)
        # and the pruned net is the original restricted to the kept channels, computed by hand
        k = torch.tensor(keep)
        h = F.conv2d(x, original[0].weight[k], original[0].bias[k], padding=1)
        bn = original[1]
        h = F.batch_norm(h, bn.running_mean[k], bn.running_var[k], bn.weight[k], bn.bias[k], eps=bn.eps)
        h = F.conv2d(h.relu(), original[3].weight[:, k], original[3].bias)
        torch.testing.assert_close(net(x), h, rtol=1e-5, atol=1e-5)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.act = nn.GELU()
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x))))


@pytest.mark.parametrize("shape", [(3, 6), (2, 3, 6)], ids=["gemm", "matmul"])
def test_linear_gelu_linear_matches_the_zeroed_original(shape):
    torch.manual_seed(0)
    mlp, x = MLP().eval(), torch.randn(*shape)
    result, original = prune(mlp, x)
    assert result.model is mlp
    keep = kept(result, "fc1.weight", 0)
    assert len(keep) == 8 and kept(result, "fc1.bias", 0) == keep == kept(result, "fc2.weight", 1)
    assert (mlp.fc1.out_features, mlp.fc2.in_features) == (8, 8)
    assert mlp.fc2.weight.shape == (5, 8) and "fc2.bias" not in result.report["initializers"]
    reference = zeroed(original, result, {"fc2.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), reference(x), rtol=1e-5, atol=1e-5)
        # GELU(0) == 0 as well, so zeroing at the producer is the same network
        producer = zeroed(original, result, {"fc1.weight": 0, "fc1.bias": 0})
        torch.testing.assert_close(mlp(x), producer(x), rtol=1e-5, atol=1e-5)


class Functional(nn.Module):
    """F.conv2d / F.linear / F.batch_norm on parameters the module owns (get_attr, not leaf modules)."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.3)
        self.b1 = nn.Parameter(torch.randn(8) * 0.1)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.beta = nn.Parameter(torch.randn(8) * 0.1)
        self.register_buffer("mean", torch.randn(8) * 0.1)
        self.register_buffer("var", torch.rand(8) + 0.5)
        self.w2 = nn.Parameter(torch.randn(5, 8) * 0.3)

    def forward(self, x):
        y = F.conv2d(x, self.w1, self.b1, padding=1)
        y = F.batch_norm(y, self.mean, self.var, self.gamma, self.beta, training=False)
        y = F.relu(y).mean(dim=(2, 3))
        return F.linear(y, self.w2)


def test_functional_conv_batch_norm_linear():
    torch.manual_seed(0)
    m, x = Functional().eval(), torch.randn(2, 3, 6, 6)
    result, original = prune(m, x)
    keep = kept(result, "w1", 0)
    assert len(keep) == 4
    for name in ("b1", "gamma", "beta", "mean", "var"):
        assert kept(result, name, 0) == keep, name
    assert kept(result, "w2", 1) == keep
    reference = zeroed(original, result, {"w2": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)
    assert_trains(result.model, x)


# -- grouped, depthwise and transposed convolutions ------------------------------------------------

@pytest.mark.parametrize("groups", [4, 8], ids=["grouped", "depthwise"])
def test_grouped_and_depthwise_conv(groups):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=groups),
                        nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(1, 3, 6, 6)
    result, original = prune(net, x)
    assert result.model is net
    mid = net[2]
    assert mid.weight.shape[0] < 8
    assert mid.in_channels == mid.weight.shape[1] * mid.groups
    assert mid.out_channels == mid.weight.shape[0]
    assert mid.out_channels % mid.groups == 0 and mid.in_channels % mid.groups == 0
    assert net[0].out_channels == mid.in_channels
    assert net[4].in_channels == mid.out_channels
    if groups == 8:  # depthwise stays depthwise
        assert mid.groups == mid.in_channels == mid.out_channels == 4
        assert mid.weight.shape[1] == 1
        assert kept(result, "0.weight", 0) == kept(result, "2.weight", 0) == kept(result, "4.weight", 1)
    else:  # two channels per group: whole groups go, each kept group keeps both its channels
        keep = kept(result, "2.weight", 0)
        groups_kept = sorted({i // 2 for i in keep})
        assert keep == [2 * g + j for g in groups_kept for j in (0, 1)], keep
        assert mid.groups == len(groups_kept) == 2 and mid.weight.shape == (4, 2, 3, 3)
        assert kept(result, "0.weight", 0) == keep == kept(result, "4.weight", 1)
    reference = zeroed(original, result, {"4.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose_prunes_both_channel_axes(groups):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                        nn.ConvTranspose2d(8, 6, 2, stride=2, groups=groups), nn.ReLU(),
                        nn.Conv2d(6, 4, 1)).eval()
    x = torch.randn(1, 3, 4, 4)
    result, _ = prune(net, x)
    up = net[2]
    # ConvTranspose weights are (in, out / groups, k, k)
    assert up.in_channels == up.weight.shape[0] == net[0].out_channels < 8
    assert up.out_channels == up.weight.shape[1] * up.groups == net[4].in_channels < 6
    assert net(x).shape == (1, 4, 8, 8)
    assert kept(result, "2.weight", 0) == kept(result, "0.weight", 0)
    if groups == 1:
        assert kept(result, "2.weight", 1) == kept(result, "2.bias", 0) == kept(result, "4.weight", 1)
    else:  # a whole group of the transposed conv goes: (in 4, out 3) each
        assert up.groups == 1 and "1" not in result.report["initializers"]["2.weight"]
        assert kept(result, "2.weight", 0) in ([0, 1, 2, 3], [4, 5, 6, 7])
        assert kept(result, "2.bias", 0) == kept(result, "4.weight", 1) == \
            ([0, 1, 2] if kept(result, "2.weight", 0)[0] == 0 else [3, 4, 5])


# -- matmul, einsum, attention --------------------------------------------------------------------

class EinsumNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.w = nn.Parameter(torch.randn(6, 8) * 0.3)
        self.out = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = self.conv(x).relu()
        z = torch.einsum("bchw,oc->bohw", y, self.w)
        return self.out(z.relu())


def test_einsum_contraction_prunes_both_sides():
    torch.manual_seed(0)
    m, x = EinsumNet().eval(), torch.randn(1, 3, 5, 5)
    result, original = prune(m, x)
    assert result.model is m
    assert kept(result, "w", 1) == kept(result, "conv.weight", 0)  # the contracted index c
    assert kept(result, "w", 0) == kept(result, "out.weight", 1)  # the free index o
    assert m.w.shape == (3, 4)
    reference = zeroed(original, result, {"w": 1, "out.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(x), rtol=1e-5, atol=1e-5)


class BmmNet(nn.Module):
    """Per-token mixing ``torch.bmm(A, X)``: tokens contract, features pass through."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 12)
        self.mix = nn.Parameter(torch.randn(1, 4, 4) * 0.5)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x):
        y = self.fc1(x).relu()
        y = torch.bmm(self.mix.expand(x.shape[0], -1, -1), y)
        return self.fc2(y)


def test_bmm_keeps_the_feature_axis_prunable():
    torch.manual_seed(0)
    m, x = BmmNet().eval(), torch.randn(2, 4, 6)
    result, _ = prune(m, x)
    assert m.fc1.out_features == m.fc2.in_features == 6
    assert "mix" not in result.report["initializers"]  # tokens are not channels


class Attention(nn.Module):
    """Timm-style attention: ``x.view(B, N, self.heads, C // self.heads)``."""

    def __init__(self, dim=16, heads=2, sdpa=False, literal_head_dim=False):
        super().__init__()
        self.heads, self.sdpa, self.literal = heads, sdpa, literal_head_dim
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, t, B, N, C):
        if self.literal:
            return t.view(B, N, self.heads, self.head_dim).transpose(1, 2)
        return t.view(B, N, self.heads, C // self.heads).transpose(1, 2)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = (self._heads(f(x), B, N, C) for f in (self.q, self.k, self.v))
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


def _attention(**kwargs):
    torch.manual_seed(0)
    return Attention(**kwargs).eval(), torch.randn(2, 5, 16)


def _heads_and_dims(keep: list[int], head_dim: int) -> tuple[list[int], list[int]]:
    """Split kept output features of a head projection into kept heads and kept head dims,
    checking they form a product (every kept head keeps the same dims)."""
    heads = sorted({i // head_dim for i in keep})
    dims = sorted({i % head_dim for i in keep})
    assert keep == [h * head_dim + d for h in heads for d in dims], keep
    return heads, dims


def _view_sizes(gm: torch.fx.GraphModule) -> list[tuple]:
    return [tuple(a for a in n.args[1:]) for n in gm.graph.nodes
            if n.op == "call_method" and n.target in ("view", "reshape")]


def _check_heads(result, heads: int):
    """q, k, v and proj agree, and the pruned axis is the one graphprune's reshape rule picks:
    the heads when there are several (the outermost split axis), else the head dims."""
    info = result.report["torch"]
    assert info["untranslated_calls"] == []
    head_dim = 16 // heads
    split = {}
    for name in ("q", "k", "v"):
        w = result.report["initializers"][f"{name}.weight"]
        assert set(w) == {"0"}, (name, w)  # the input features are the input's
        assert result.report["initializers"][f"{name}.bias"]["0"] == w["0"]
        split[name] = _heads_and_dims(w["0"], head_dim)
    assert kept(result, "q.weight", 0) == kept(result, "k.weight", 0)  # q·kᵀ contracts them
    assert kept(result, "v.weight", 0) == kept(result, "proj.weight", 1)
    assert "proj.bias" not in result.report["initializers"]
    if heads > 1:  # whole heads go, each kept head keeps all its dims
        assert all(len(h) == heads // 2 and d == list(range(head_dim)) for h, d in split.values()), split
    else:
        assert all(h == [0] and len(d) == head_dim // 2 for h, d in split.values()), split
    if isinstance(result.model, torch.fx.GraphModule):
        assert info["returned"] == "torch.fx.GraphModule"
        assert info["rewritten_literals"], "a GraphModule is returned but no literal was rewritten"
    else:
        assert info["returned"] == "original module"


def test_literal_view_into_heads_is_rewritten():
    m, x = _attention(heads=2)
    result, _ = prune(m, x)
    assert result.report["torch"]["tracer"] == "symbolic_trace"
    _check_heads(result, heads=2)
    # ``self.heads`` is a literal of the forward: the class cannot run, the GraphModule can
    assert isinstance(result.model, torch.fx.GraphModule)
    sizes = _view_sizes(result.model)
    assert [s[2] for s in sizes[:3]] == [1, 1, 1], sizes  # view(B, N, 2 -> 1, C // 2)
    assert sizes[3][2] == 8, sizes  # reshape(B, N, C) with C -> 8 at the end
    assert any("2 -> 1" in s for s in result.report["torch"]["rewritten_literals"])
    assert any("heads = 2" in s for s in result.report["torch"]["stale_attributes"])
    with pytest.raises(RuntimeError), torch.no_grad():
        m(x)


def test_literal_head_dim_is_rewritten_and_reported_stale():
    m, x = _attention(heads=1, literal_head_dim=True)
    result, _ = prune(m, x)
    _check_heads(result, heads=1)
    assert isinstance(result.model, torch.fx.GraphModule)
    sizes = _view_sizes(result.model)
    assert [s[3] for s in sizes[:2]] == [8, 8], sizes  # q and k: view(B, N, 1, 16 -> 8)
    stale = result.report["torch"]["stale_attributes"]
    assert any("head_dim = 16" in s for s in stale), stale


@pytest.mark.parametrize("heads", [2, 1])
def test_sdpa_with_heads(heads):
    m, x = _attention(sdpa=True, heads=heads)
    result, original = prune(m, x)
    _check_heads(result, heads)
    # independent oracle: zeroed q/k features add nothing to q·kᵀ, zeroed proj inputs drop v's;
    # the scale must still be the original 1/sqrt(16 / heads)
    reference = zeroed(original, result, {"q.weight": 0, "q.bias": 0, "proj.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)
    literals = result.report["torch"]["rewritten_literals"]
    sdpa = [n for n in result.model.graph.nodes if n.target is F.scaled_dot_product_attention]
    assert len(sdpa) == 1
    if heads == 1:  # q/k lose head dims: the default 1/sqrt(E) must stay the original one
        assert any("freeze_scale" in s for s in literals), literals
        assert sdpa[0].kwargs.get("scale") == pytest.approx(16 ** -0.5)
    else:  # whole heads go: the head size, and so the default scale, is unchanged
        assert not any("freeze_scale" in s for s in literals), literals


# -- normalisation ----------------------------------------------------------------------------------

class FunctionalLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.w = nn.Parameter(torch.rand(16) + 0.5)
        self.b = nn.Parameter(torch.randn(16) * 0.1)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(F.layer_norm(self.fc1(x), (16,), self.w, self.b, 1e-5))


def test_functional_layer_norm_literal_shape_is_rewritten_and_verified_over_kept_channels():
    torch.manual_seed(0)
    m, x = FunctionalLayerNorm().eval(), torch.randn(2, 3, 8)
    result, _ = prune(m, x, status="exact")  # the oracle's LayerNorm takes kept channels only
    (group,) = [g for g in result.report["groups"] if g.get("removed")]
    assert "normalises over it" in group["approximate"]
    keep = kept(result, "fc1.weight", 0)
    assert kept(result, "w", 0) == kept(result, "b", 0) == keep == kept(result, "fc2.weight", 1)
    assert isinstance(result.model, torch.fx.GraphModule)
    (ln,) = [n for n in result.model.graph.nodes if n.target is F.layer_norm]
    assert tuple(ln.args[1]) == (8,)
    assert any("16 -> 8" in s for s in result.report["torch"]["rewritten_literals"])
    assert_trains(result.model, x)


def test_layer_norm_module_is_exact_over_kept_channels_and_attribute_follows():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4)).eval()
    x = torch.randn(2, 3, 8)
    result, _ = prune(m, x, status="exact")
    assert result.model is m and m[1].normalized_shape == (8,) and m[1].weight.shape == (8,)


# -- elementwise -----------------------------------------------------------------------------------

class Elementwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(3, 8, 1)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        y = torch.add(a, b, alpha=2.0)
        y = torch.sub(y, a, alpha=0.5) * torch.sigmoid(b) / 2.0
        y = torch.rsub(y, 1.0) + (1.0 - a)
        y = torch.where(y > 0, y, 0.1 * y)
        y = y.masked_fill(b < -1.0, 0.0)
        y = F.hardtanh(torch.clamp(y, -3.0, 3.0), -2.0, 2.0)
        y = F.dropout(F.silu(y), 0.5, training=False)
        return self.out(y)


def test_elementwise_ops_couple_their_operands():
    torch.manual_seed(0)
    m, x = Elementwise().eval(), torch.randn(1, 3, 4, 4)
    result, original = prune(m, x)
    assert result.model is m and result.report["torch"]["untranslated_calls"] == []
    keep = kept(result, "a.weight", 0)
    assert len(keep) == 4
    assert kept(result, "b.weight", 0) == keep == kept(result, "out.weight", 1)
    # independent check: rsub/1 - a make removed channels non-zero before `out`, so only zeroing
    # at the consumer reproduces the pruned model
    reference = zeroed(original, result, {"out.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(x), rtol=1e-5, atol=1e-5)


# -- layout ----------------------------------------------------------------------------------------

class Chunked(nn.Module):
    """A channel chunk whose pieces meet again in one consumer: one segment, so pieces may go uneven."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 1)
        self.c2 = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        a, b = self.c1(x).chunk(2, dim=1)
        return self.c2(torch.cat([a.relu(), b.sigmoid()], 1))


class ChunkedLoop(Chunked):
    """The same, iterating over the pieces: symbolic tracing fails, torch.export takes over."""

    def forward(self, x):
        parts = self.c1(x).chunk(2, dim=1)
        return self.c2(torch.cat([parts[0].relu(), *(p.sigmoid() for p in parts[1:])], 1))


class Chunked4(Chunked):
    def forward(self, x):
        a, b, c, d = torch.chunk(self.c1(x), 4, 1)
        return self.c2(torch.cat([a.relu(), b.sigmoid(), c.tanh(), d], 1))


SPLITS = ("split", torch.split, torch.ops.aten.split_with_sizes.default)


def _uneven_chunk(cls):
    torch.manual_seed(0)
    m, x = cls().eval(), torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        m.c1.weight[:8] *= 10.0  # the first chunk wins every place
        m.c1.bias[:8] *= 10.0
    return m, x


@pytest.mark.parametrize("cls, tracer", [(Chunked, "symbolic_trace"), (ChunkedLoop, "concrete"),
                                         (ChunkedLoop, "torch.export")],
                         ids=["symbolic_trace", "concrete", "torch.export"])
def test_chunk_along_channels_with_uneven_pieces(cls, tracer, tracer_used):
    m, x = _uneven_chunk(cls)
    result, original = prune(m, x)
    assert result.report["torch"]["tracer"] == tracer_used(tracer, result.report)
    keep = kept(result, "c1.weight", 0)
    # the second chunk would be emptied; the selection gives one channel back
    assert keep[:8] == list(range(8)) and len(keep) == 9
    assert kept(result, "c2.weight", 1) == keep
    assert isinstance(result.model, torch.fx.GraphModule)  # chunk(2) of 9 channels: now split([8, 1])
    (split,) = [n for n in result.model.graph.nodes if n.target in SPLITS]
    assert list(split.args[1]) == [8, 1] and split.args[2] == 1
    assert not [n for n in result.model.graph.nodes if n.target in ("chunk", torch.chunk)]
    reference = zeroed(original, result, {"c2.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)
    assert_trains(result.model, x)
    assert_state_dict_round_trips(result.model, x)


def test_chunk_with_even_pieces_keeps_the_class():
    torch.manual_seed(0)
    m, x = Chunked4().eval(), torch.randn(1, 3, 5, 5)
    with torch.no_grad():  # importance even across the four chunks: 2 of 4 kept in each
        m.c1.weight.copy_(torch.tensor([4.0, 1.0, 3.0, 2.0] * 4).view(16, 1, 1, 1) * m.c1.weight.sign())
    result, original = prune(m, x)
    assert kept(result, "c1.weight", 0) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert result.model is m  # chunk(4) of 8 channels gives the right pieces: the class still runs
    reference = zeroed(original, result, {"c2.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(x), rtol=1e-5, atol=1e-5)


class SplitSizes(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 12, 1)
        self.a = nn.Conv2d(4, 3, 1)
        self.b = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        a, b = torch.split(self.c1(x), [4, 8], dim=1)
        return self.a(a.relu()) + self.b(b.relu())


def test_split_with_sizes_gets_new_sizes():
    torch.manual_seed(0)
    m, x = SplitSizes().eval(), torch.randn(1, 3, 4, 4)
    result, original = prune(m, x)
    keep = kept(result, "c1.weight", 0)
    # each piece has its own consumer: each segment loses half
    assert len([i for i in keep if i < 4]) == 2 and len([i for i in keep if i >= 4]) == 4
    assert kept(result, "a.weight", 1) == [i for i in keep if i < 4]
    assert kept(result, "b.weight", 1) == [i - 4 for i in keep if i >= 4]
    # the class itself cannot run with [4, 8] on 6 channels: the GraphModule holds the new sizes
    assert isinstance(result.model, torch.fx.GraphModule)
    (split,) = [n for n in result.model.graph.nodes if n.target in SPLITS]
    assert list(split.args[1]) == [2, 4]
    reference = zeroed(original, result, {"a.weight": 1, "b.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


class CatBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(3, 10, 1)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.out(torch.cat([self.a(x), self.b(x)], dim=1).relu())


def test_cat_of_two_conv_branches_then_conv():
    torch.manual_seed(0)
    m, x = CatBranches().eval(), torch.randn(1, 3, 5, 5)
    result, original = prune(m, x)
    assert result.model is m
    ka, kb = kept(result, "a.weight", 0), kept(result, "b.weight", 0)
    assert (len(ka), len(kb)) == (3, 5)  # each branch is a segment: both lose half
    assert kept(result, "out.weight", 1) == ka + [6 + i for i in kb]
    assert m.out.in_channels == m.a.out_channels + m.b.out_channels == 8
    reference = zeroed(original, result, {"out.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(x), rtol=1e-5, atol=1e-5)


class FlattenLinear(nn.Module):
    def __init__(self, module_flatten: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.flatten = nn.Flatten() if module_flatten else None
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        y = self.conv(x).relu()
        y = self.flatten(y) if self.flatten is not None else torch.flatten(y, 1)
        return self.fc(y)


@pytest.mark.parametrize("module_flatten", [True, False], ids=["nn.Flatten", "torch.flatten"])
def test_flatten_into_linear_removes_whole_channel_blocks(module_flatten):
    torch.manual_seed(0)
    m, x = FlattenLinear(module_flatten).eval(), torch.randn(2, 3, 4, 4)
    result, original = prune(m, x)
    assert result.model is m
    keep = kept(result, "conv.weight", 0)
    assert len(keep) == 4
    assert kept(result, "fc.weight", 1) == [c * 16 + s for c in keep for s in range(16)]
    assert m.fc.in_features == 64
    reference = zeroed(original, result, {"fc.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(x), rtol=1e-5, atol=1e-5)


class SliceChannels(nn.Module):
    def __init__(self, negative=False):
        super().__init__()
        self.negative = negative
        self.conv = nn.Conv2d(3, 16, 1)
        self.a = nn.Conv2d(8, 4, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv(x).relu()
        if self.negative:
            return self.a(y[:, :-8]) + self.b(y[:, -8:])
        return self.a(y[:, :8]) + self.b(y[:, 8:])


@pytest.mark.parametrize("negative", [False, True], ids=["x[:, :8]", "x[:, :-8]"])
def test_getitem_slice_of_a_channel_range_gets_new_bounds(negative):
    torch.manual_seed(0)
    m, x = SliceChannels(negative).eval(), torch.randn(1, 3, 4, 4)
    result, original = prune(m, x)
    keep = kept(result, "conv.weight", 0)
    low = [i for i in keep if i < 8]
    assert 0 < len(low) < 8 and 0 < len(keep) - len(low) < 8
    assert kept(result, "a.weight", 1) == low
    assert kept(result, "b.weight", 1) == [i - 8 for i in keep if i >= 8]
    assert isinstance(result.model, torch.fx.GraphModule)  # the bound 8 is a literal of the forward
    bounds = [a for n in result.model.graph.nodes if n.target is operator.getitem
              for a in (n.args[1] if isinstance(n.args[1], tuple) else (n.args[1],)) if isinstance(a, slice)]
    high = len(keep) - len(low)
    # slices are unhashable before Python 3.12: compare as lists
    wanted = [slice(None, len(low)), slice(len(low), None)]
    if negative:  # either form is right: ``x[:, :-high]`` or ``x[:, :len(low)]``
        assert all(b in bounds for b in wanted) or \
            all(b in bounds for b in [slice(None, -high), slice(-high, None)]), bounds
    else:
        assert all(b in bounds for b in wanted), bounds
    reference = zeroed(original, result, {"a.weight": 1, "b.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


class SpatialOps(nn.Module):
    """Ops on the spatial axes only: roll, pad, interpolate, pooling, narrow and slicing."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = self.c1(x).relu()
        y = torch.roll(y, shifts=(1, -2), dims=(2, 3))
        y = F.pad(y, (1, 1, 1, 1))[:, :, 1:-1, 1:-1]
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = F.avg_pool2d(self.pool(y), 2)
        y = self.up(self.c2(y)).relu()
        y = y.narrow(3, 0, 6)[..., 1:] + F.adaptive_max_pool2d(y, (6, 5))
        return self.fc(self.gap(y).flatten(1))


def test_roll_pad_resize_and_pooling_on_spatial_axes():
    torch.manual_seed(0)
    m, x = SpatialOps().eval(), torch.randn(1, 3, 6, 6)
    result, original = prune(m, x)
    assert result.report["torch"]["untranslated_calls"] == []
    assert result.model is m
    assert len(kept(result, "c1.weight", 0)) == 4 and kept(result, "c2.weight", 1) == kept(result, "c1.weight", 0)
    assert len(kept(result, "c2.weight", 0)) == 4 and kept(result, "fc.weight", 1) == kept(result, "c2.weight", 0)
    reference = zeroed(original, result, {"c2.weight": 1, "fc.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(x), rtol=1e-5, atol=1e-5)


class Reductions(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.conv(x)
        y = y / (y.norm(dim=(2, 3), keepdim=True) + 1.0)
        s = y.flatten(2).softmax(dim=-1)  # over positions: channels untouched
        z = y.mean(dim=(2, 3)) + y.sum(dim=(2, 3)) * 0.1 + y.amax(dim=(2, 3)) - torch.amin(y, dim=(2, 3))
        return self.fc(z + s.sum(-1))


def test_reductions_norm_and_softmax_over_positions():
    torch.manual_seed(0)
    m, x = Reductions().eval(), torch.randn(2, 3, 4, 4)
    result, original = prune(m, x)
    assert result.report["torch"]["untranslated_calls"] == []
    assert kept(result, "fc.weight", 1) == kept(result, "conv.weight", 0)
    reference = zeroed(original, result, {"fc.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(x), rtol=1e-5, atol=1e-5)


class LayoutOps(nn.Module):
    """permute, transpose, (un)squeeze, unflatten, stack/unbind, select on non-channel axes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.fc1 = nn.Linear(8, 12)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        y = self.conv(x).relu()  # (B, 8, H, W)
        y = y.permute(0, 2, 3, 1).unsqueeze(1).squeeze(1)  # (B, H, W, 8)
        y = self.fc1(y).flatten(1, 2)  # (B, HW, 12)
        y = y.unflatten(1, (4, 4)).transpose(1, 2).reshape(y.shape[0], 16, 12)
        first, second = torch.stack([y, y * 2.0], dim=1).unbind(1)
        y = first + second.select(1, 0).unsqueeze(1)
        return self.fc2(F.gelu(y))


def test_layout_ops_keep_channels_prunable():
    torch.manual_seed(0)
    m, x = LayoutOps().eval(), torch.randn(2, 3, 4, 4)
    result, original = prune(m, x)
    assert result.report["torch"]["untranslated_calls"] == []
    assert kept(result, "fc1.weight", 1) == kept(result, "conv.weight", 0)
    assert kept(result, "fc2.weight", 1) == kept(result, "fc1.weight", 0)
    assert (m.conv.out_channels, m.fc1.out_features) == (4, 6)
    reference = zeroed(original, result, {"fc1.weight": 1, "fc2.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


class IndexChannels(nn.Module):
    """A 1-D tensor index (a permutation buffer) on the channel axis: a Gather the IR must remap."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.register_buffer("order", torch.tensor([3, 1, 0, 2, 7, 5, 6, 4]))
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.out(self.conv(x).relu()[:, self.order])


def test_tensor_index_on_channels_prunes_the_index_not_its_source():
    """A Gather by arbitrary indices cannot map source channels: they are pinned; the gathered
    positions (entries of the index buffer) are the channels the consumer sees, and those prune."""
    torch.manual_seed(0)
    m, x = IndexChannels().eval(), torch.randn(1, 3, 4, 4)
    order = m.order.clone()
    result, original = prune(m, x)
    assert result.report["torch"]["untranslated_calls"] == []
    assert "conv.weight" not in result.report["initializers"] and m.conv.out_channels == 8
    positions = kept(result, "order", 0)
    assert len(positions) == 4 and kept(result, "out.weight", 1) == positions
    assert torch.equal(m.order, order[positions])
    reference = zeroed(original, result, {"out.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(x), rtol=1e-5, atol=1e-5)


class Roll(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 1)
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c2(torch.roll(self.c1(x), shifts=(2, 1), dims=(2, 3)).relu())


def test_roll_on_spatial_axes_matches_the_zeroed_original():
    torch.manual_seed(0)
    m, x = Roll().eval(), torch.randn(1, 3, 5, 4)
    result, original = prune(m, x)
    assert result.model is m and len(kept(result, "c1.weight", 0)) == 4
    reference = zeroed(original, result, {"c2.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(x), rtol=1e-5, atol=1e-5)
        k = torch.tensor(kept(result, "c1.weight", 0))
        by_hand = F.conv2d(torch.roll(original.c1(x)[:, k], (2, 1), (2, 3)).relu(),
                           original.c2.weight[:, k], original.c2.bias)
        torch.testing.assert_close(m(x), by_hand, rtol=1e-5, atol=1e-5)


class SplitInt(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 1)
        self.c2 = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        a, b, c, d = self.c1(x).split(4, 1)
        return self.c2(torch.cat([a, b.relu(), c, d.sigmoid()], 1))


def test_split_with_an_int_size_becomes_explicit_sizes():
    torch.manual_seed(0)
    m, x = SplitInt().eval(), torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        m.c1.weight[4:8] *= 20.0  # the second piece keeps all of its channels
    result, original = prune(m, x)
    keep = kept(result, "c1.weight", 0)
    counts = [len([i for i in keep if 4 * p <= i < 4 * p + 4]) for p in range(4)]
    assert counts[1] == 4 and all(c >= 1 for c in counts) and len(set(counts)) > 1, counts
    (split,) = [n for n in result.model.graph.nodes if n.target in SPLITS]
    assert list(split.args[1]) == counts
    reference = zeroed(original, result, {"c2.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


# -- formerly bugs: narrow/roll on channels, run-time normalized_shape -------------------------------

class NarrowChannels(SliceChannels):
    def forward(self, x):
        y = self.conv(x).relu()
        return self.a(y.narrow(1, 0, 8)) + self.b(y.narrow(1, 8, 8))


def test_narrow_of_a_channel_range_gets_new_bounds():
    torch.manual_seed(0)
    m, x = NarrowChannels().eval(), torch.randn(1, 3, 4, 4)
    result, original = prune(m, x)
    keep = kept(result, "conv.weight", 0)
    assert kept(result, "a.weight", 1) == [i for i in keep if i < 8]
    assert kept(result, "b.weight", 1) == [i - 8 for i in keep if i >= 8]
    reference = zeroed(original, result, {"a.weight": 1, "b.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


class RollChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 1)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.c3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c3(torch.roll(self.c2(self.c1(x).relu()), 3, 1).relu())


def test_roll_along_channels_is_pinned_or_rewritten():
    torch.manual_seed(0)
    m, x = RollChannels().eval(), torch.randn(1, 3, 5, 5)
    with torch.no_grad():  # keep channels 0-3: after the prune the right shift would be 0, not 3
        m.c2.weight[:4] *= 10.0
    result, original = prune(m, x)
    inits = result.report["initializers"]
    consumers = {n: 1 for n in ("c2.weight", "c3.weight") if "1" in inits.get(n, {})}
    reference = zeroed(original, result, consumers)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


class RuntimeLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(F.layer_norm(h, h.shape[-1:]))


def test_layer_norm_with_a_run_time_normalized_shape():
    torch.manual_seed(0)
    m, x = RuntimeLayerNorm().eval(), torch.randn(2, 3, 8)
    result, _ = prune(m, x, status="exact")
    assert kept(result, "fc1.weight", 0) == kept(result, "fc2.weight", 1)
    assert result.report["torch"]["rewritten_literals"] == []  # nothing literal to rewrite


# -- embedding and a ViT-style stem -----------------------------------------------------------------

class EmbedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, ids):
        return self.fc(self.emb(ids).relu())


def test_embedding_width_is_pruned():
    torch.manual_seed(0)
    m, ids = EmbedNet().eval(), torch.randint(0, 10, (2, 5))
    result, original = prune(m, ids)
    assert result.model is m
    keep = kept(result, "emb.weight", 1)
    assert "0" not in result.report["initializers"]["emb.weight"]  # the vocabulary stays
    assert kept(result, "fc.weight", 1) == keep and len(keep) == 8
    assert (m.emb.num_embeddings, m.emb.embedding_dim, m.fc.in_features) == (10, 8, 8)
    reference = zeroed(original, result, {"fc.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(m(ids), reference(ids), rtol=1e-5, atol=1e-5)
    assert_trains(m, ids)
    assert_state_dict_round_trips(m, ids)


class TinyViT(nn.Module):
    def __init__(self, dim=16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 5, dim) * 0.1)
        self.fc1 = nn.Linear(dim, 24)
        self.fc2 = nn.Linear(24, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x[:, 0])


def test_class_token_expand_and_cat_vit_style():
    torch.manual_seed(0)
    m, x = TinyViT().eval(), torch.randn(2, 3, 8, 8)
    result, original = prune(m, x)
    assert result.model is m
    hidden = kept(result, "patch.weight", 0)
    assert len(hidden) == 8
    for name, axis in (("patch.bias", 0), ("cls_token", 2), ("pos", 2), ("fc1.weight", 1),
                       ("fc2.weight", 0), ("fc2.bias", 0), ("head.weight", 1)):
        assert kept(result, name, axis) == hidden, name
    assert len(kept(result, "fc1.weight", 0)) == 12
    assert m.cls_token.shape == (1, 1, 8) and m.pos.shape == (1, 5, 8)
    # independent oracle: the residual stream carries the hidden channels from the patch conv, the
    # class token and the position embedding to the head; zero them everywhere they are written
    # and where they are read, and the original network must compute what the pruned one does
    reference = zeroed(original, result, {"head.weight": 1, "fc1.weight": 1, "fc2.weight": 1})
    gone = torch.tensor(removed(result, "patch.weight", 0, 16))
    with torch.no_grad():
        for p, axis in ((reference.patch.weight, 0), (reference.patch.bias, 0), (reference.cls_token, 2),
                        (reference.pos, 2), (reference.fc2.weight, 0), (reference.fc2.bias, 0)):
            p.index_fill_(axis, gone, 0.0)
        torch.testing.assert_close(m(x), reference(x), rtol=1e-5, atol=1e-5)
    assert_trains(m, x)
    assert_state_dict_round_trips(m, x)


# -- opaque calls pin their channels ----------------------------------------------------------------

@torch.fx.wrap
def flip_channels(x):
    """Channel-mixing and unknown to graphprune: an opaque call."""
    return x.flip(1)


class Opaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 1)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.c3 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = flip_channels(self.c1(x).relu())
        return self.c3(self.c2(y).relu())


def test_opaque_wrapped_call_pins_its_channels():
    torch.manual_seed(0)
    m, x = Opaque().eval(), torch.randn(1, 3, 4, 4)
    result, original = prune(m, x)
    info = result.report["torch"]
    assert any("flip" in call for call in info["untranslated_calls"]), info["untranslated_calls"]
    inits = result.report["initializers"]
    assert "c1.weight" not in inits and "c1.bias" not in inits  # flipped channels stay
    assert "1" not in inits["c2.weight"] and m.c1.out_channels == m.c2.in_channels == 8
    assert len(kept(result, "c2.weight", 0)) == 4 and kept(result, "c3.weight", 1) == kept(result, "c2.weight", 0)
    assert info["tracer"] == "symbolic_trace" and result.model is m
    pinned = {p: g["pinned"] for g in result.report["pinned"] for p in g["parameters"]}
    for param in ("c1.weight[axis 0]", "c1.bias[axis 0]", "c2.weight[axis 1]"):
        assert "opaque:flip_channels" in pinned.get(param, ""), (param, pinned)
    reference = zeroed(original, result, {"c3.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


# -- the pruned module trains and its state_dict round-trips ----------------------------------------

FACTORIES = {
    "conv_bn_relu_conv": conv_bn_relu_conv,
    "mlp": lambda: (MLP().eval(), torch.randn(2, 3, 6)),
    "attention_heads": lambda: _attention(heads=2),
    "sdpa_head_dims": lambda: _attention(sdpa=True, heads=1),
    "grouped_conv": lambda: (nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=4),
                                           nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval(),
                             torch.randn(2, 3, 6, 6)),
    "conv_transpose": lambda: (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                             nn.ConvTranspose2d(8, 6, 2, stride=2), nn.ReLU(),
                                             nn.Conv2d(6, 4, 1)).eval(), torch.randn(1, 3, 4, 4)),
    "split": lambda: (SplitSizes().eval(), torch.randn(1, 3, 4, 4)),
    "slice": lambda: (SliceChannels().eval(), torch.randn(1, 3, 4, 4)),
    "einsum": lambda: (EinsumNet().eval(), torch.randn(1, 3, 5, 5)),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_pruned_module_trains_and_state_dict_round_trips(name):
    torch.manual_seed(0)
    model, x = FACTORIES[name]()
    result, _ = prune(model, x)
    pruned = result.model
    shapes = {k: tuple(v.shape) for k, v in pruned.state_dict().items()}
    assert_trains(pruned, x)
    assert_state_dict_round_trips(pruned, x)
    assert {k: tuple(v.shape) for k, v in pruned.state_dict().items()} == shapes
    # an optimiser step on the new shapes
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    pruned.train()
    (pruned(*_inputs(x)) ** 2).mean().backward()
    opt.step()
    pruned.eval()
    with torch.no_grad():
        assert torch.isfinite(pruned(*_inputs(x))).all()


# -- ops of transformers and timm: the IR computes what torch computes ----------------------------

class Exported(nn.Module):
    """``inner`` behind a branch on a size: symbolic tracing fails, torch.export traces its ATen ops."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.shape[0] > 0:
            return self.inner(x)
        return self.inner(x) * 0


TRACERS = ["symbolic_trace", "concrete", "torch.export"]  # see conftest.py


def traced(model: nn.Module, tracer: str) -> tuple[nn.Module, str]:
    """The module to prune for ``tracer`` and the prefix of its parameter names."""
    return (model, "") if tracer == "symbolic_trace" else (Exported(model), "inner.")


def ir_outputs(model: nn.Module, *xs):
    """Trace ``model`` and run the IR it translates into with ONNX's reference evaluator."""
    import numpy as np
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from graphprune.emit.onnx import _node_proto
    from graphprune.frontends.fx import trace

    fxm = trace(model.eval(), xs, concrete=True)  # (refused for tracer "torch.export": conftest.py)
    g = fxm.graph
    assert fxm.untranslated == [], fxm.untranslated
    used = {i for n in g.nodes for i in n.inputs}
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in g.constants.items() if k in used]
    ins = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(x.numpy().dtype), None)
           for k, x in zip(g.inputs, xs)]
    outs = [helper.make_tensor_value_info(o, 0, None) for o in g.outputs]
    onnx_model = helper.make_model(helper.make_graph([_node_proto(n) for n in g.nodes], "ir", ins, outs, inits),
                                   opset_imports=[helper.make_opsetid("", 17)])
    return fxm, ReferenceEvaluator(onnx_model).run(None, {k: x.numpy() for k, x in zip(g.inputs, xs)})


class Fn(nn.Module):
    """``fn(self, x)`` as a module (parameters and buffers set up by ``setup(self)``)."""

    def __init__(self, fn, setup=None):
        super().__init__()
        self.fn = fn
        if setup:
            setup(self)

    def forward(self, x):
        return self.fn(self, x)


def _params(**shapes):
    def setup(m):
        for name, shape in shapes.items():
            m.register_parameter(name, nn.Parameter(torch.randn(*shape)))
    return setup


def _grid_sum(grids):
    return grids[0] * 2 + grids[1]


def _embedding(m):
    m.w = nn.Parameter(torch.randn(10, 3))
    m.register_buffer("ids", torch.randint(0, 10, (2, 4)))


def _attn_bias(m):
    m.bias = nn.Parameter(torch.randn(2, 5))
    m.register_buffer("idx", torch.randint(0, 5, (4, 4)))


SEMANTICS = {
    "pow": (lambda m, x: x ** 2 + torch.pow(x, 3) + x.abs().pow(x) + 2 ** x + torch.pow(2.0, x.tanh()), None),
    "division": (lambda m, x: torch.div(x, 0.3, rounding_mode="floor") + torch.div(x, -0.3, rounding_mode="trunc")
                 + torch.floor_divide(x, 0.7) + x.div(x.abs() + 1, rounding_mode=None) / 3, None),
    "remainder": (lambda m, x: torch.remainder(x, 0.7) + torch.fmod(x, 0.7) + x % -0.6
                  + torch.remainder(x, x.abs() + 0.5), None),
    "alpha": (lambda m, x: torch.sub(x, x.sin(), alpha=0.5) + torch.rsub(x, 1.0, alpha=2.0)
              + torch.add(x, x.cos(), alpha=3) + torch.where(x != 0.5, x, 0.0), None),
    "var_std": (lambda m, x: x.var(-1, keepdim=True) + torch.std(x, dim=(1, 2), keepdim=True)
                + torch.var(x, 1, False, True) + x.var(dim=-1, correction=0, keepdim=True)
                + torch.var_mean(x, dim=-1, correction=2)[0].unsqueeze(-1)
                + torch.std_mean(x, dim=1)[1].unsqueeze(1) + x.std(), None),  # (export fails std_mean keepdim)
    "addcmul": (lambda m, x: torch.addcmul(x, x, x.sin(), value=0.5) + torch.addcdiv(x, x, x.abs() + 1, value=-2.0)
                + x.addcmul(m.w, x), _params(w=(6,))),
    "addmm": (lambda m, x: torch.addmm(m.b, x[0], m.w, beta=0.5, alpha=2.0) + torch.addmm(m.b, x[1], m.w)
              + torch.addmm(m.b, x[0], m.w, beta=0), _params(w=(6, 3), b=(3,))),
    "baddbmm": (lambda m, x: torch.baddbmm(m.b, x, m.w, beta=0.5, alpha=-1.5).sum(0)
                + torch.addbmm(m.b[0], x, m.w, alpha=2.0)
                + torch.addmv(m.b[0, 0], x[0], m.w[0, :, 0], beta=3).unsqueeze(-1),
                _params(w=(2, 6, 3), b=(4, 3))),
    "embedding": (lambda m, x: F.embedding(m.ids, m.w, padding_idx=0) + torch.embedding(m.w, m.ids.flip(0))
                  + x[..., :3], _embedding),
    "meshgrid": (lambda m, x: _grid_sum(torch.meshgrid(x[0, 0], x[1, :, 1], indexing="ij"))
                 + _grid_sum(torch.meshgrid(x[0, 0, :4], x[1, 1, :2], indexing="xy")).sum(), None),
    "index_buffer": (lambda m, x: m.bias[:, m.idx] + m.bias[:, m.idx[0]].sum(), _attn_bias),
}


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("name", list(SEMANTICS))
def test_translation_computes_what_torch_computes(name, tracer):
    """The IR of each op family, run by ONNX's reference evaluator, is the torch result."""
    torch.manual_seed(0)
    fn, setup = SEMANTICS[name]
    model, _ = traced(Fn(fn, setup), tracer)
    x = torch.randn(2, 4, 6)
    fxm, (got,) = ir_outputs(model, x)
    assert fxm.tracer == tracer
    with torch.no_grad():
        want = model(x)
    assert got.shape == tuple(want.shape)
    torch.testing.assert_close(torch.as_tensor(got, dtype=want.dtype), want, rtol=1e-5, atol=1e-5)


class SDPA(nn.Module):
    """``softmax(q·kᵀ/√d + mask)·v`` through F.scaled_dot_product_attention, timm's way: ``attn_mask``
    and ``is_causal`` are arguments of ``forward`` (placeholders holding None/False when not given)."""

    def __init__(self, heads=4, kv_heads=4, causal=False, bool_mask=False, dim=16):
        super().__init__()
        self.heads, self.kv_heads, self.causal, self.bool_mask = heads, kv_heads, causal, bool_mask
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * self.head_dim * kv_heads)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(0.1)
        self.register_buffer("mask", torch.ones(5, 5, dtype=torch.bool).tril())

    def forward(self, x, attn_mask=None, is_causal=False):
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.heads, -1).transpose(1, 2)
        k, v = self.kv(x).view(B, N, 2, self.kv_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.bool_mask:
            attn_mask = self.mask  # for N = 5
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop.p if self.training else 0.,
            is_causal=self.causal or is_causal, enable_gqa=self.kv_heads != self.heads)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


SDPA_CASES = {"timm_placeholders": {}, "causal": {"causal": True}, "bool_mask": {"bool_mask": True},
              "gqa": {"kv_heads": 2}}


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("case", list(SDPA_CASES))
def test_sdpa_masks_and_gqa_prune_whole_heads(case, tracer, tracer_used):
    torch.manual_seed(0)
    m, x = SDPA(**SDPA_CASES[case]).eval(), torch.randn(2, 5, 16)
    model, p = traced(m, tracer)
    fxm, (got,) = ir_outputs(model, x)
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(got), m(x), rtol=1e-5, atol=1e-5)
    result, original = prune(model, x)
    assert result.report["torch"]["tracer"] == tracer_used(tracer, result.report)
    assert result.report["torch"]["untranslated_calls"] == []
    q_heads, _ = _heads_and_dims(kept(result, p + "q.weight", 0), 4)
    kv = kept(result, p + "kv.weight", 0)
    kv_heads = sorted({i // 4 for i in kv if i < 4 * m.kv_heads})
    assert len(kv_heads) == m.kv_heads // 2
    group = 4 // m.kv_heads  # query head h reads K/V head h // group
    assert q_heads == [h for kv_head in kv_heads for h in range(kv_head * group, (kv_head + 1) * group)]
    assert kept(result, p + "proj.weight", 1) == kept(result, p + "q.weight", 0)
    reference = zeroed(original, result, {p + "proj.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


class DroppingSDPA(SDPA):
    def forward(self, x):
        q = self.q(x).view(2, 5, 4, 4).transpose(1, 2)
        k, v = self.kv(x).view(2, 5, 2, 4, 4).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)
        return self.proj(out.transpose(1, 2).reshape(2, 5, 16))


def test_sdpa_dropout_stays_opaque():
    """F.scaled_dot_product_attention drops out whatever the module's mode: not a translation."""
    from graphprune.frontends.fx import trace

    fxm = trace(DroppingSDPA().eval(), (torch.randn(2, 5, 16),))
    assert any("attention dropout" in s for s in fxm.untranslated), fxm.untranslated


# -- ops of transformers and timm: pruned through ------------------------------------------------

class TableNet(nn.Module):
    """``F.embedding`` on a table the module owns (``aten.embedding`` on the export path)."""

    def __init__(self, max_norm=None):
        super().__init__()
        self.max_norm = max_norm
        self.table = nn.Parameter(torch.randn(10, 16))
        self.fc = nn.Linear(16, 4)

    def forward(self, ids):
        return self.fc(F.embedding(ids, self.table, padding_idx=0, max_norm=self.max_norm).relu())


@pytest.mark.parametrize("tracer", TRACERS)
def test_functional_and_aten_embedding_prune_the_table_width(tracer, tracer_used):
    torch.manual_seed(0)
    model, p = traced(TableNet(), tracer)
    ids = torch.randint(0, 10, (2, 5))
    result, original = prune(model, ids)
    assert result.report["torch"]["tracer"] == tracer_used(tracer, result.report)
    assert result.report["torch"]["untranslated_calls"] == []
    assert set(result.report["initializers"][p + "table"]) == {"1"}  # the vocabulary stays
    assert kept(result, p + "table", 1) == kept(result, p + "fc.weight", 1)
    reference = zeroed(original, result, {p + "fc.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(ids), reference(ids), rtol=1e-5, atol=1e-5)


def test_embedding_with_max_norm_stays_pinned():
    """``max_norm`` renormalises each looked-up row (a norm over the width): not a Gather."""
    torch.manual_seed(0)
    for m in (TableNet(max_norm=1.0), nn.Sequential(nn.Embedding(10, 16, max_norm=1.0), nn.Linear(16, 4))):
        result = graphprune.prune(m.eval(), 0.5, example_inputs=torch.randint(0, 10, (2, 5)))
        assert any("max_norm" in s for s in result.report["torch"]["untranslated_calls"])
        assert not any(k in result.report["initializers"] for k in ("table", "0.weight"))


class Arithmetic(nn.Module):
    """Every spelling of pow, rounded division and remainder between two conv branches."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        y = a ** 2 + torch.pow(b, 3) + a.abs().pow(b.sigmoid()) + 2 ** a.tanh()
        y = y + torch.div(a, b.abs() + 1, rounding_mode="floor") + torch.div(a, 0.3, rounding_mode="trunc")
        y = y + torch.floor_divide(b, 0.7) + torch.remainder(a, 0.7) + torch.fmod(b, 0.5) + b % 0.3
        y = y + torch.sub(a, b, alpha=0.5) + torch.rsub(b, 1.0, alpha=2.0)
        return self.out(y)


@pytest.mark.parametrize("tracer", TRACERS)
def test_pow_division_and_remainder_couple_their_operands(tracer, tracer_used):
    torch.manual_seed(0)
    model, p = traced(Arithmetic(), tracer)
    x = torch.randn(1, 3, 4, 4)
    result, original = prune(model, x)
    assert result.report["torch"]["tracer"] == tracer_used(tracer, result.report)
    assert result.report["torch"]["untranslated_calls"] == []
    keep = kept(result, p + "a.weight", 0)
    assert len(keep) == 4 and kept(result, p + "b.weight", 0) == keep == kept(result, p + "out.weight", 1)
    reference = zeroed(original, result, {p + "out.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_rounded_division_is_not_a_plain_div():
    """floor and trunc division round after the Div; ``rounding_mode`` is never dropped."""
    from graphprune.frontends.fx import trace

    for mode, ops in (("floor", ["Div", "Floor"]), ("trunc", ["Div", "Sign", "Abs", "Floor", "Mul"]),
                      (None, ["Div"])):
        fxm = trace(Fn(lambda m, x, mode=mode: torch.div(x, 0.3, rounding_mode=mode)), (torch.randn(3),))
        assert [n.op for n in fxm.graph.nodes] == ops, mode


class Conv1D(nn.Module):
    """Hugging Face's ``Conv1D`` (GPT-2): weight ``[in, out]``, ``addmm(bias, x.view(-1, in), weight)``."""

    def __init__(self, nf, nx, beta=1.0, alpha=1.0):
        super().__init__()
        self.nf, self.beta, self.alpha = nf, beta, alpha
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf))

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight, beta=self.beta, alpha=self.alpha)
        return x.view(size_out)


class Conv1DMLP(nn.Module):
    def __init__(self, beta=1.0, alpha=1.0):
        super().__init__()
        self.c_fc, self.c_proj = Conv1D(24, 8, beta, alpha), Conv1D(8, 24, beta, alpha)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("beta, alpha", [(1.0, 1.0), (0.5, 2.0), (0.0, -1.0)])
def test_addmm_conv1d_prunes_weight_columns_and_rows(beta, alpha, tracer, tracer_used):
    torch.manual_seed(0)
    model, p = traced(Conv1DMLP(beta, alpha), tracer)
    x = torch.randn(2, 3, 8)
    result, original = prune(model, x)
    assert result.report["torch"]["tracer"] == tracer_used(tracer, result.report)
    assert result.report["torch"]["untranslated_calls"] == []
    inits = result.report["initializers"]
    keep = kept(result, p + "c_fc.weight", 1)  # out = axis 1 of a Conv1D weight
    assert len(keep) == 12 and set(inits[p + "c_fc.weight"]) == {"1"}
    assert kept(result, p + "c_fc.bias", 0) == keep == kept(result, p + "c_proj.weight", 0)  # in = axis 0
    assert set(inits[p + "c_proj.weight"]) == {"0"} and p + "c_proj.bias" not in inits
    reference = zeroed(original, result, {p + "c_proj.weight": 0})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


class Batched(nn.Module):
    """``baddbmm`` / ``addbmm`` of a projected input with per-batch weights, then a linear."""

    def __init__(self, reduce_batch=False):
        super().__init__()
        self.reduce_batch = reduce_batch
        self.fc1 = nn.Linear(6, 16)
        self.w = nn.Parameter(torch.randn(2, 16, 8) * 0.3)
        self.bias = nn.Parameter(torch.randn(8))
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        if self.reduce_batch:
            y = torch.addbmm(self.bias, h, self.w, beta=0.5, alpha=2.0)
        else:
            y = torch.baddbmm(self.bias, h, self.w, beta=0.5, alpha=2.0)
        return self.fc2(y)


@pytest.mark.parametrize("reduce_batch", [False, True], ids=["baddbmm", "addbmm"])
@pytest.mark.parametrize("tracer", TRACERS)
def test_baddbmm_and_addbmm_prune_both_sides(tracer, reduce_batch):
    torch.manual_seed(0)
    model, p = traced(Batched(reduce_batch), tracer)
    x = torch.randn(2, 3, 6)
    result, original = prune(model, x)
    assert result.report["torch"]["untranslated_calls"] == []
    assert kept(result, p + "fc1.weight", 0) == kept(result, p + "w", 1)  # contracted by the bmm
    assert kept(result, p + "w", 2) == kept(result, p + "bias", 0) == kept(result, p + "fc2.weight", 1)
    reference = zeroed(original, result, {p + "w": 1, p + "fc2.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


class Spread(nn.Module):
    """Per-channel statistics over the spatial axes (var, std, var_mean with a correction)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        a = self.c1(x)
        v, mu = torch.var_mean(a, dim=(2, 3), correction=2, keepdim=True)
        s = a.std(dim=(2, 3), keepdim=True) + torch.var(a, (2, 3), False, True)
        return self.c2((a - mu) / torch.sqrt(v + 1e-3) * s)


@pytest.mark.parametrize("tracer", TRACERS)
def test_var_and_std_over_positions_keep_channels_prunable(tracer):
    torch.manual_seed(0)
    model, p = traced(Spread(), tracer)
    x = torch.randn(2, 3, 4, 4)
    result, original = prune(model, x)
    assert result.report["torch"]["untranslated_calls"] == []
    assert len(kept(result, p + "c1.weight", 0)) == 4
    assert kept(result, p + "c1.weight", 0) == kept(result, p + "c2.weight", 1)
    reference = zeroed(original, result, {p + "c2.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


class ScaleShift(nn.Module):
    """``addcmul`` / ``addcdiv`` with per-channel parameters ``[C, 1, 1]`` (ConvNeXt-V2's GRN tail)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)
        self.weight = nn.Parameter(torch.randn(8, 1, 1))
        self.bias = nn.Parameter(torch.randn(8, 1, 1))

    def forward(self, x):
        a = self.c1(x)
        y = torch.addcmul(self.bias, self.weight, a, value=0.5)
        return self.c2(y.addcdiv(a, self.weight.abs() + 1, value=-2.0))


@pytest.mark.parametrize("tracer", TRACERS)
def test_addcmul_and_addcdiv_slice_their_parameters(tracer):
    torch.manual_seed(0)
    model, p = traced(ScaleShift(), tracer)
    x = torch.randn(1, 3, 4, 4)
    result, original = prune(model, x)
    assert result.report["torch"]["untranslated_calls"] == []
    keep = kept(result, p + "c1.weight", 0)
    assert kept(result, p + "weight", 0) == kept(result, p + "bias", 0) == keep == kept(result, p + "c2.weight", 1)
    reference = zeroed(original, result, {p + "c2.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


class GridBias(nn.Module):
    """A position bias from ``meshgrid`` of ``arange``s of the sizes (Swin-style): trace-time constants."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        a = self.c1(x)
        grid = torch.meshgrid(torch.arange(a.shape[2]), torch.arange(a.shape[3]), indexing="ij")
        return self.c2(a + (grid[0] - grid[1]).float() * 0.1)


def test_static_meshgrid_is_folded():
    torch.manual_seed(0)
    m, x = GridBias().eval(), torch.randn(1, 3, 4, 5)
    result, original = prune(m, x)
    assert result.report["torch"]["tracer"] == "symbolic_trace"
    assert result.report["torch"]["untranslated_calls"] == []
    assert kept(result, "c1.weight", 0) == kept(result, "c2.weight", 1)


class BiasedAttention(nn.Module):
    """LeViT's attention bias: a parameter ``[heads, P]`` gathered by an index buffer ``[N, N]``."""

    def __init__(self, heads=4, dim=16, tokens=6):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.randn(heads, 4))
        self.register_buffer("attention_bias_idxs", torch.randint(0, 4, (tokens, tokens)))

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = q @ k.transpose(-2, -1) * 0.5 + self.attention_biases[:, self.attention_bias_idxs]
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C))


@pytest.mark.parametrize("tracer", TRACERS)
def test_attention_bias_gathered_by_an_index_buffer_follows_the_heads(tracer, tracer_used):
    torch.manual_seed(0)
    model, p = traced(BiasedAttention(), tracer)
    x = torch.randn(2, 6, 16)
    result, original = prune(model, x)
    assert result.report["torch"]["tracer"] == tracer_used(tracer, result.report)
    assert result.report["torch"]["untranslated_calls"] == []
    qkv = kept(result, p + "qkv.weight", 0)
    q_heads, dims = _heads_and_dims([i for i in qkv if i < 16], 4)
    assert len(q_heads) == 2 and dims == list(range(4))
    assert kept(result, p + "attention_biases", 0) == q_heads
    assert set(result.report["initializers"][p + "attention_biases"]) == {"0"}
    reference = zeroed(original, result, {p + "proj.weight": 1})
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


class MaskIndex(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 1), nn.Conv2d(5, 4, 1)
        self.register_buffer("mask", torch.tensor([1, 0, 1, 1, 0, 1, 0, 1], dtype=torch.bool))

    def forward(self, x):
        return self.c2(self.c1(x)[:, self.mask])


def test_boolean_mask_index_is_not_a_gather():
    """``x[:, mask]`` selects channels by a mask: pinned, never gathered by the mask's 0/1 values."""
    torch.manual_seed(0)
    m, x = MaskIndex().eval(), torch.randn(1, 3, 4, 4)
    result = graphprune.prune(m, 0.5, example_inputs=x)
    assert result.report["torch"]["untranslated_calls"]
    assert "c1.weight" not in result.report["initializers"]
