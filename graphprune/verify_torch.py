"""The verification oracle run in torch.

The reference is the *original* traced graph run by an interpreter that zeroes
every removed channel where it is consumed (``torch.where(mask, x, 0)`` on
the contracted input of each Conv/Linear/MatMul), exactly as the ONNX oracle
does with ``Where`` nodes. It must be computed before the module is sliced.
The pruned model must reproduce it on the same inputs. Statistics of the
norms over a pruned axis are taken over kept channels (:mod:`.masked_norms`),
so hidden-size prunes are checked exactly too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from .frontends.concrete import TRACER as CONCRETE
from .frontends.concrete import NeedsExport, graph_at
from .frontends.fx import FxModel, dynamic_axes
from .masked_norms import evaluate, norm_masks
from .oracle_replay import replay_masked
from .verify import Verification


class MaskedInterpreter(fx.Interpreter):
    """Runs a GraphModule with some call inputs masked along one axis, and some
    normalisation statistics taken over kept channels only (:mod:`.masked_norms`)."""

    def __init__(self, gm: fx.GraphModule, masks: dict[str, list], norms: dict | None = None):
        super().__init__(gm)
        self.masks = masks
        self.norms = norms or {}
        self.unhandled: set[str] = set()  # statistics met in a form masked_norms does not evaluate
        self.by_name = {n.name: n for n in gm.graph.nodes}

    def run_node(self, n):
        if n.name in self.norms:
            with self._set_current_node(n):
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                value = evaluate(self.module, n, args, kwargs, *self.norms[n.name])
            if value is not None:
                return value
            self.unhandled.add(n.name)
        masks = self.masks.get(n.name)
        if not masks:
            return super().run_node(n)
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            if len(masks) == 1 and n.op == "call_module":
                value = _over_kept(self.fetch_attr(n.target), masks[0], args, kwargs, self.env, self.by_name)
                if value is not None:
                    return value
            weights = {}
            for source, axis, keep in masks:
                if source.startswith(PARAMETER):
                    weights[source[len(PARAMETER):]] = (axis, keep)
                    continue
                value = self.env[self.by_name[source]]
                shape = [1] * value.dim()
                shape[axis] = -1
                masked = torch.where(keep.view(shape), value, torch.zeros((), dtype=value.dtype))
                args, kwargs = pytree.tree_map(lambda a, v=value, m=masked: m if a is v else a, (args, kwargs))
            if weights:
                return _call_masked(self.fetch_attr(n.target), weights, args, kwargs)
            return getattr(self, n.op)(n.target, args, kwargs)


def _over_kept(module, mask, args, kwargs, env, by_name):
    """A plain Linear or Conv whose input is masked, computed over the kept input channels only:
    ``W[:, kept] · x[kept]`` is the masked contraction ``W · (keep ⊙ x)`` without its zero terms,
    at the cost of the kept fraction (the unpruned model dominates a verified prune). None
    where the module or the mask is of another kind (the caller zeroes the input instead)."""
    source, axis, keep = mask
    if kwargs or len(args) != 1 or source.startswith(PARAMETER) or env.get(by_name[source]) is not args[0]:
        return None
    x = args[0]
    if type(module) is torch.nn.Linear and axis in (-1, x.dim() - 1):
        kept = keep.nonzero().squeeze(1)
        return torch.nn.functional.linear(x.index_select(-1, kept), module.weight.index_select(1, kept), module.bias)
    if type(module) in (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d) and module.groups == 1 and axis == 1 \
            and x.dim() == module.weight.dim():
        kept = keep.nonzero().squeeze(1)
        return module._conv_forward(x.index_select(1, kept), module.weight.index_select(1, kept), module.bias)
    return None


PARAMETER = "param:"  # a mask source that is a leaf module's own parameter, not an fx node


def _call_masked(module: torch.nn.Module, weights: dict, args, kwargs):
    """Call ``module`` with removed channels of its own parameters zeroed: ``{name: (axis, keep)}``.

    Zeroing column ``j`` of a contraction's weight is zeroing input ``j`` where it is consumed;
    it is the only way to mask a contraction inside a leaf module (``weight_hh``, the recurrence
    of ``nn.LSTM``)."""
    masked = {}
    for name, (axis, keep) in weights.items():
        value = module.get_parameter(name)
        shape = [1] * value.dim()
        shape[axis] = -1
        masked[name] = torch.where(keep.view(shape), value, torch.zeros((), dtype=value.dtype))
    if isinstance(module, torch.nn.RNNBase):  # its forward reads the flat list, not the attributes
        flat = [masked.get(n, w) for n, w in zip(module._flat_weights_names, module._flat_weights)]
        saved = module._flat_weights
        module._flat_weights = flat
        try:
            return module(*args, **kwargs)
        finally:
            module._flat_weights = saved
    return torch.func.functional_call(module, masked, args, kwargs)


def oracle_masks(model: FxModel, plan) -> dict[str, list]:
    """``{consumer fx node: [(input fx node, axis, kept mask)]}`` for every pruned contraction."""
    masks: dict[str, list] = {}
    table = plan.analysis.table
    producers = None
    for c in table.contractions:
        kept = plan.kept(c.dim)
        if kept is None:
            continue
        source = model.fx_of_ir.get(c.tensor)
        consumer = model.origin[c.node]
        if source is None:  # a conv module with reflect/replicate/circular padding pads first
            producers = producers if producers is not None else model.graph.producers()
            pad = producers.get(c.tensor)
            if pad is not None and pad.op == "Pad" and model.origin.get(pad.name) is consumer and c.axis < 2:
                source = model.fx_of_ir.get(pad.inputs[0])  # a spatial pad: zero the channel before it
        if source is None and consumer.op == "call_module" and c.tensor in model.params:
            source = PARAMETER + c.tensor[len(consumer.target) + 1:]  # a leaf module's own weight
        if source is None:
            raise RuntimeError(f"cannot place the oracle mask on '{c.tensor}' (consumed by {consumer.name})")
        keep = torch.zeros(table.sizes[c.dim], dtype=torch.bool)
        keep[torch.as_tensor(kept, dtype=torch.long)] = True
        masks.setdefault(consumer.name, []).append((source, c.axis, keep))
    return masks


class NeedsGraphs(Exception):
    """The noise floor needs the oracle's graph at every checked shape, and a replayed check
    (:mod:`.oracle_replay`) has none: prune again with the checks traced."""


@dataclass
class OracleGraph:
    """A graph the oracle runs, with its masks placed by that graph's node names (``gm`` None for
    a check the module ran itself, replaying the masks)."""

    gm: fx.GraphModule | None
    masks: dict
    norms: dict

    def runner(self) -> MaskedInterpreter:
        return MaskedInterpreter(self.gm, self.masks, self.norms)


def reference_outputs(model: FxModel, plan, inputs_list, count: int = 2,
                      replay: bool = True) -> tuple[list, list, list[str], list]:
    """The oracle's outputs on the first ``count`` input sets the traced graph accepts.

    Input sets the graph rejects (a size it specialised) are skipped; the
    example itself must run. Returns ``(references, the input sets used,
    statistics not taken over kept channels, the OracleGraph each ran on)``: the
    traced graph, or for a concrete trace a fresh one per input set
    (:func:`.concrete.graph_at`), which must reach another shape than the example's
    (:class:`.concrete.NeedsExport`). With ``replay``, a concrete trace's other input sets
    run the module itself with the trace's masks replayed (:mod:`.oracle_replay`), where
    that stands for a trace; their OracleGraph then has no graph (``gm`` None).
    """
    masks = oracle_masks(model, plan)
    norms, uncovered = norm_masks(model, plan)
    unhandled: set[str] = set()

    def run(inputs):
        if replay and model.tracer == CONCRETE and not _is_example(model, inputs):
            replayed = replay_masked(model, inputs, masks, norms)
            if replayed is not None:
                out, missed = replayed
                unhandled.update(missed)
                return out, OracleGraph(None, masks, norms)  # no graph: the noise floor re-traces
        gm, names = graph_at(model, inputs)
        graph = OracleGraph(gm, masks, norms) if names is None else _renamed(model.gm, gm, names, masks, norms)
        runner = graph.runner()
        out = runner.run(*inputs)
        unhandled.update(runner.unhandled)
        return out, graph

    merged = _merged_batch(inputs_list) if count == 2 else None
    with torch.no_grad():
        if merged is not None:
            try:
                out, graph = run(merged)
                return [out], [merged], uncovered + sorted(unhandled), [graph]
            except NeedsExport:
                raise
            except Exception:  # the graph fixed the batch: the example and the variants as they are
                pass
        references, used, graphs = [], [], []
        for k, inputs in enumerate(inputs_list):
            try:
                out, graph = run(inputs)
            except NeedsExport:
                raise
            except Exception:
                if k == 0:
                    raise
                continue
            references.append(out)
            used.append(inputs)
            graphs.append(graph)
            if len(used) == count:
                break
    if model.tracer == CONCRETE and count > 1 and len({_shapes(u) for u in used}) < 2:
        raise NeedsExport("the concrete trace runs at no other shape than the example's")
    return references, used, uncovered + sorted(unhandled), graphs


def _renamed(a: fx.GraphModule, b: fx.GraphModule, names: dict[str, str], masks: dict, norms: dict) -> OracleGraph:
    """The masks of graph ``a`` placed on graph ``b`` (another concrete trace): each consumer and
    statistic by :func:`.concrete.aligned`'s names, each masked input by its position among the
    consumer's arguments. :class:`.concrete.NeedsExport` where one has no counterpart."""
    in_a = {n.name: n for n in a.graph.nodes}
    in_b = {n.name: n for n in b.graph.nodes}

    def counterpart(name: str) -> fx.Node:
        node = in_b.get(names.get(name, ""))
        if node is None or node.op != in_a[name].op or node.target != in_a[name].target:
            raise NeedsExport(f"the concrete trace at other shapes has no counterpart of '{name}'")
        return node

    placed = {}
    for consumer, entries in masks.items():
        there = counterpart(consumer)
        here_args = pytree.tree_leaves((in_a[consumer].args, in_a[consumer].kwargs))
        there_args = pytree.tree_leaves((there.args, there.kwargs))
        moved = []
        for source, axis, keep in entries:
            if source.startswith(PARAMETER):
                moved.append((source, axis, keep))
                continue
            at = next((i for i, x in enumerate(here_args) if isinstance(x, fx.Node) and x.name == source), None)
            if at is None or len(there_args) != len(here_args) or not isinstance(there_args[at], fx.Node):
                raise NeedsExport(f"the concrete trace at other shapes feeds '{consumer}' otherwise")
            moved.append((there_args[at].name, axis, keep))
        placed[there.name] = moved
    return OracleGraph(b, placed, {counterpart(name).name: value for name, value in norms.items()})


def _is_example(model: FxModel, inputs) -> bool:
    return len(inputs) == len(model.example) and all(a is b for a, b in zip(inputs, model.example))


def _shapes(inputs) -> tuple:
    return tuple(tuple(x.shape) if isinstance(x, torch.Tensor) else None for x in inputs)


def _merged_batch(inputs_list: list[tuple]) -> tuple | None:
    """One input set in place of the example and the first variant, where the variant differs
    only by a larger batch (images: only the batch is free): the example's rows followed by
    the variant's extra rows. It is at another shape than the example (a batch-locked result
    fails it) and holds the example, at two thirds of the compute for a batch of 1 (the
    oracle runs the unpruned model, which dominates a verified CNN prune). None otherwise."""
    if len(inputs_list) < 2 or len(inputs_list[0]) != len(inputs_list[1]):
        return None
    merged, grown = [], False
    for x, y in zip(inputs_list[0], inputs_list[1]):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            if x is not y:
                return None
            merged.append(x)
            continue
        if x.dim() == 0 or x.dim() != y.dim() or x.shape[1:] != y.shape[1:] or y.shape[0] <= x.shape[0]:
            return None
        merged.append(torch.cat([x, y[x.shape[0]:]]))
        grown = True
    return tuple(merged) if grown else None


def snapshot(gm: fx.GraphModule) -> fx.GraphModule:
    """What the traced model was before emission, for a later :func:`noise_floor`, at no copy of
    the weights: a copy of the graph over shallow copies of every submodule that share its tensors.

    Emission replaces tensors in the modules' parameter and buffer tables, sets size attributes
    and rewrites literals in the graph; it never writes into a tensor or into an object an
    attribute holds. So each module needs only its own ``__dict__`` and tables (not a deep
    copy: that walks every Python object of the model, ~10× the time), and the graph its own nodes.
    """
    import copy

    from torch.fx._lazy_graph_module import _LazyGraphModule

    clones: dict[int, torch.nn.Module] = {}

    def clone(m: torch.nn.Module) -> torch.nn.Module:
        if id(m) not in clones:
            c = object.__new__(type(m))
            c.__dict__ = dict(m.__dict__)
            c._parameters, c._buffers = dict(m._parameters), dict(m._buffers)
            clones[id(m)] = c
            c._modules = {k: clone(v) if v is not None else None for k, v in m._modules.items()}
        return clones[id(m)]

    root = torch.nn.Module()
    root.__dict__.update({k: v for k, v in gm.__dict__.items()
                          if k not in ("_parameters", "_buffers", "_modules", "_graph", "_code")})
    root._parameters, root._buffers = dict(gm._parameters), dict(gm._buffers)
    root._modules = {k: clone(v) if v is not None else None for k, v in gm._modules.items()}
    graph = fx.Graph(owning_module=None, tracer_cls=gm.graph._tracer_cls)
    graph.output(graph.graph_copy(gm.graph, {}), type_expr=None)
    graph._codegen = copy.deepcopy(gm.graph._codegen)
    copied = _LazyGraphModule(root, graph, class_name=type(gm).__name__)  # (compiled if it runs)
    copied.meta = dict(getattr(gm, "meta", {}))
    return copied


def _widened(gm: fx.GraphModule) -> fx.GraphModule:
    """``gm`` with every float parameter and buffer replaced by a float64 copy. Not
    ``Module.double()``: that swaps ``.data`` of the shared tensors themselves.

    The graph (the snapshot's own copy) is widened too: torch.export writes float32 into
    dtype assertions and casts (``_assert_tensor_metadata``, ``.float()``, ``_to_copy``), which
    would fail or narrow a float64 run.
    """
    assert_metadata = getattr(torch.ops.aten, "_assert_tensor_metadata", None)
    wide = {torch.float32: torch.float64, torch.float16: torch.float64, torch.bfloat16: torch.float64}
    for node in list(gm.graph.nodes):
        if assert_metadata is not None and node.target is getattr(assert_metadata, "default", None):
            gm.graph.erase_node(node)
            continue
        node.args = pytree.tree_map(lambda v: wide.get(v, v) if isinstance(v, torch.dtype) else v, node.args)
        node.kwargs = pytree.tree_map(lambda v: wide.get(v, v) if isinstance(v, torch.dtype) else v, node.kwargs)
    gm.recompile()
    for m in gm.modules():
        for store in (m._parameters, m._buffers):
            for name, value in store.items():
                if value is not None and value.is_floating_point():
                    store[name] = value.detach().double()
    for name, value in list(vars(gm).items()):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(gm, name, value.double())
    return gm


def noise_floor(model: FxModel, plan, inputs_list, references, originals: list[OracleGraph]) -> float:
    """Float32 rounding of the oracle itself: its relative distance to the same oracle in float64.

    A correct prune changes the order of summation in every contraction, so it
    may differ from the float32 oracle by about as much as the oracle differs
    from exact arithmetic; on deep models that exceeds a fixed tolerance.
    ``originals[k]`` is the unpruned graph for ``inputs_list[k]``: the :func:`snapshot` taken
    before emission, or a concrete trace of those inputs (each widened in place: they serve
    once). 0.0 when the graph cannot run in float64.
    """
    try:
        widened: set[int] = set()
        worst = 0.0
        with torch.no_grad():
            for ref, inputs, graph in zip(references, inputs_list, originals):
                if id(graph.gm) not in widened:
                    _widened(graph.gm)
                    widened.add(id(graph.gm))
                wide = tuple(x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                             for x in inputs)
                exact = [t for t in pytree.tree_leaves(graph.runner().run(*wide)) if isinstance(t, torch.Tensor)]
                got = [t for t in pytree.tree_leaves(ref) if isinstance(t, torch.Tensor)]
                for a, b in zip(exact, got):
                    if a.is_floating_point() and a.shape == b.shape and a.numel():
                        worst = max(worst, ((a - b.double()).abs().max() / (a.abs().max() + 1e-12)).item())
        return worst
    except Exception:
        return 0.0


def check_inputs(example_inputs, seed: int = 0) -> list[tuple]:
    """The example, then redrawn variants, preferred in order: another batch *and* length,
    another batch, the same shapes.

    Only the axes the tracer leaves free (:func:`~graphprune.frontends.fx.dynamic_axes`)
    change: batch ``B → B+1``, lengths ``L → L//2`` (shorter, so position tables still
    cover them, and ``(B+1)·L/2`` tokens: for a batch of one no more than the example's,
    where the oracle and the check each run the model on it), equal sizes staying equal. Floats are redrawn from
    a normal distribution, integers uniformly within the example's own range
    (token ids stay valid, all-ones masks stay ones).
    """
    generator = torch.Generator().manual_seed(seed)

    def redraw(x, shape):
        if not isinstance(x, torch.Tensor):
            return x
        if x.is_floating_point():
            return torch.randn(shape, generator=generator, dtype=x.dtype).to(x.device)
        if x.dtype == torch.bool or not x.numel():
            return x.reshape(-1)[:1].expand(shape).clone() if x.numel() else torch.zeros(shape, dtype=x.dtype)
        lo, hi = int(x.min()), int(x.max())
        return torch.randint(lo, hi + 1, shape, generator=generator, dtype=x.dtype).to(x.device)

    def variant(batch: bool, length: bool):
        out = []
        for x in example_inputs:
            if not isinstance(x, torch.Tensor):
                out.append(x)
                continue
            shape = list(x.shape)
            for axis in dynamic_axes(x):
                if axis == 0 and batch:
                    shape[0] += 1
                elif axis > 0 and length and shape[axis] > 1:
                    shape[axis] //= 2
            out.append(redraw(x, shape))
        return tuple(out)

    return [tuple(example_inputs), variant(True, True), variant(True, False), variant(False, False)]


def compare_outputs(reference: list, model, inputs_list, tolerance: float, approximate: str | None,
                    outputs: list | None = None) -> Verification:
    """``model`` on each input set against the oracle's ``reference``; ``outputs``, when given,
    receives the model's outputs (a caller that needs them need not run the model again)."""
    worst, details = 0.0, {}
    with torch.no_grad():
        for k, (ref, inputs) in enumerate(zip(reference, inputs_list)):
            try:
                got = model(*inputs)
            except Exception as exc:  # the pruned model must run
                return Verification("failed", tolerance=tolerance, message=f"pruned model fails to run: {exc}")
            if outputs is not None:
                outputs.append(got)
            ref_leaves = [t for t in pytree.tree_leaves(ref) if isinstance(t, torch.Tensor)]
            got_leaves = [t for t in pytree.tree_leaves(got) if isinstance(t, torch.Tensor)]
            if len(ref_leaves) != len(got_leaves):
                return Verification("failed", tolerance=tolerance, message="number of outputs changed")
            for i, (a, b) in enumerate(zip(ref_leaves, got_leaves)):
                if a.shape != b.shape:
                    return Verification("failed", tolerance=tolerance,
                                        message=f"output {i} has shape {tuple(b.shape)}, expected {tuple(a.shape)}")
                if not a.is_floating_point():
                    if approximate is None and not torch.equal(a, b):
                        return Verification("failed", tolerance=tolerance, message=f"output {i} differs")
                    continue
                if approximate is not None:
                    if not torch.isfinite(b).all():
                        return Verification("failed", tolerance=tolerance, message=f"output {i} is not finite")
                    continue
                scale = a.abs().max().item() + 1e-12
                err = (a - b).abs().max().item() / scale if a.numel() else 0.0
                details[f"output{i}"] = max(details.get(f"output{i}", 0.0), err)
                worst = max(worst, err)
    if approximate is not None:
        return Verification("approximate", tolerance=tolerance, message=approximate)
    if worst > tolerance:
        return Verification("failed", worst, details, tolerance,
                            f"max relative error {worst:.2e} exceeds {tolerance:.0e}")
    return Verification("exact", worst, details, tolerance)
