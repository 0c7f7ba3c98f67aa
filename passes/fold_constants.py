"""fold-constants: evaluate every subgraph whose inputs are all constant (lossless).

What folds, in one topological sweep (so whole chains collapse):

* ``Shape``/``Size`` of a tensor whose shape is static, and everything
  computed from them (``Gather``, ``Unsqueeze``, ``Concat``, arithmetic on
  shapes), so a ``Reshape`` target becomes a literal the channel rules can read;
* ``ConstantOfShape``, ``Range`` and any other standard op over constants;
* weight preprocessing the exporter left as ops: ``Transpose(W)``,
  ``Reshape(W)``, ``Cast(W)``, ``Unsqueeze(b)``...

``Constant`` nodes are already constants in the IR (the front end
materialises them), and the front end already ran this fold at load with the
default options; the pass matters after other passes expose new constant
inputs, for graphs loaded with ``fold_shapes=False``, and for its report.

What stays, and why (each is reported under ``"skipped"`` with its reason):

* outputs larger than ``max_elements`` that take more bytes than the node's
  inputs (``Tile``/``Expand``/``ConstantOfShape`` into a big tensor, a float16
  weight cast to float32): folding would grow the file, and the runtime
  computes them just as well;
* ``keep_ops`` (default ``DequantizeLinear``): folding would turn a quantized
  weight into a float one four times its size and break the Q/DQ pattern
  runtimes fuse into integer kernels;
* nondeterministic ops (``RandomNormal``..., ``Dropout``): one frozen draw is
  not the same function; inference ``Dropout`` is removed by
  ``remove-identities`` instead;
* ops of non-standard domains and ops with subgraphs (the reference
  evaluator cannot be trusted to run them), and values whose dtype or shape
  disagree with shape inference;
* initializers that are also graph inputs are run-time values, not constants.

Values are computed with ONNX's reference implementation (numpy), which
matches onnxruntime to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.pipeline import Pass, register
from graphprune.shape_folding import DEFAULT_MAX_ELEMENTS, fold_constants, overridable_constants


@register
@dataclass
class FoldConstants(Pass):
    """Replace all-constant subgraphs with their values.

    Options:
        max_elements: outputs up to this many elements always fold; larger
            ones only when they are no larger (in bytes) than the inputs.
        keep_ops: comma-separated op types never folded.
    """

    name = "fold-constants"
    summary = "evaluate subgraphs with all-constant inputs (shape arithmetic, weight transposes) into constants"

    max_elements: int = DEFAULT_MAX_ELEMENTS
    keep_ops: str = "DequantizeLinear"

    def apply(self, graph) -> dict:
        keep = frozenset(op.strip() for op in self.keep_ops.split(",") if op.strip())
        constants_before = len(graph.constants)
        result = fold_constants(graph, self.max_elements, keep, overridable_constants(graph))
        orphans = _drop_orphans(graph, result.folded)
        by_op: dict[str, int] = {}
        for record in result.folded:
            by_op[record["op"]] = by_op.get(record["op"], 0) + 1
        return {
            "changed": len(result.folded),
            "folded_by_op": dict(sorted(by_op.items())),
            "folded": [{k: v for k, v in r.items() if k != "inputs"} for r in result.folded],
            "constants": {"before": constants_before, "after": len(graph.constants),
                          "orphans_removed": orphans},
            "skipped": result.skipped,
        }


def _drop_orphans(graph, folded: list[dict]) -> int:
    """Delete constants that only fed folded nodes (the float weight under a folded Transpose,
    the intermediate values of a folded shape chain).

    Only the inputs and outputs of folded nodes are candidates: unrelated dead
    code is ``dce``'s job, so this pass's count stays about folding.
    """
    candidates = {t for r in folded for t in (*r["inputs"], *r["outputs"])}
    if not candidates:
        return 0
    used = set(graph.outputs)
    for node in graph.nodes:
        used.update(t for t in (*node.inputs, *node.implicit_inputs) if t)
    orphans = [t for t in candidates if t in graph.constants and t not in used]
    for name in orphans:
        del graph.constants[name]
        graph.folded.pop(name, None)
    return len(orphans)
