"""The verification oracle run in torch.

The reference is the *original* traced graph run by an interpreter that zeroes
every removed channel where it is consumed (``torch.where(mask, x, 0)`` on
the contracted input of each Conv/Linear/MatMul), exactly as the ONNX oracle
does with ``Where`` nodes. It must be computed before the module is sliced.
The pruned model must reproduce it on the same inputs.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from .frontends.fx import FxModel
from .verify import Verification


class MaskedInterpreter(fx.Interpreter):
    """Runs a GraphModule with some call inputs masked along one axis."""

    def __init__(self, gm: fx.GraphModule, masks: dict[str, list]):
        super().__init__(gm)
        self.masks = masks
        self.by_name = {n.name: n for n in gm.graph.nodes}

    def run_node(self, n):
        masks = self.masks.get(n.name)
        if not masks:
            return super().run_node(n)
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            for source, axis, keep in masks:
                value = self.env[self.by_name[source]]
                shape = [1] * value.dim()
                shape[axis] = -1
                masked = torch.where(keep.view(shape), value, torch.zeros((), dtype=value.dtype))
                args, kwargs = pytree.tree_map(lambda a, v=value, m=masked: m if a is v else a, (args, kwargs))
            return getattr(self, n.op)(n.target, args, kwargs)


def oracle_masks(model: FxModel, plan) -> dict[str, list]:
    """``{consumer fx node: [(input fx node, axis, kept mask)]}`` for every pruned contraction."""
    masks: dict[str, list] = {}
    table = plan.analysis.table
    for c in table.contractions:
        kept = plan.kept(c.dim)
        if kept is None:
            continue
        source = model.fx_of_ir.get(c.tensor)
        consumer = model.origin[c.node]
        if source is None:
            raise RuntimeError(f"cannot place the oracle mask on '{c.tensor}' (consumed by {consumer.name})")
        keep = torch.zeros(table.sizes[c.dim], dtype=torch.bool)
        keep[torch.as_tensor(kept, dtype=torch.long)] = True
        masks.setdefault(consumer.name, []).append((source, c.axis, keep))
    return masks


def reference_outputs(model: FxModel, plan, inputs_list) -> list:
    runner = MaskedInterpreter(model.gm, oracle_masks(model, plan))
    with torch.no_grad():
        return [runner.run(*inputs) for inputs in inputs_list]


def random_inputs(example_inputs, count: int = 2, seed: int = 0) -> list[tuple]:
    """The example inputs and ``count - 1`` random variants (float tensors redrawn)."""
    generator = torch.Generator().manual_seed(seed)
    sets = [tuple(example_inputs)]
    for _ in range(count - 1):
        sets.append(tuple(torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                          if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                          for x in example_inputs))
    return sets


def compare_outputs(reference: list, model, inputs_list, tolerance: float, approximate: str | None) -> Verification:
    worst, details = 0.0, {}
    with torch.no_grad():
        for k, (ref, inputs) in enumerate(zip(reference, inputs_list)):
            try:
                got = model(*inputs)
            except Exception as exc:  # the pruned model must run
                return Verification("failed", tolerance=tolerance, message=f"pruned model fails to run: {exc}")
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
