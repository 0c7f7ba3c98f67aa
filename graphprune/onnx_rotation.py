"""Applying residual-stream rotations (:mod:`graphprune.rotation`) to an ONNX graph.

The new values replace the graph's constants; a tied weight (one initializer
read by the embedding ``Gather`` and, through a ``Transpose``, by the LM
head's ``MatMul``) gets a second initializer, ``<name>.untied``, for the
reader that took the final norm's scale. The rotated graph must compute the
same function: onnxruntime runs it and the graph as loaded on the held-out
calibration feeds, and a rotation whose outputs change beyond float rounding
is undone, with the reason reported (:func:`graphprune.rotation.rotate_groups`).
"""

from __future__ import annotations

from .activation_importance import contraction_weight
from .channels import analyse
from .emit.onnx import to_onnx
from .onnx_calibration import collect_onnx_statistics, output_error, run_all
from .rotation import NO_STREAM, rotate_groups, stream_groups, stream_inputs


def _untie(graph, analysis, rotation) -> list | str:
    """Point each tied weight's contraction reader at a private copy; returns undo steps."""
    table = analysis.table
    nodes = {n.name: n for n in graph.nodes}
    undo = []
    for name, value in rotation.private.items():
        readers = [c for c in table.contractions if int(analysis.group_of[c.dim]) == rotation.group
                   and (found := contraction_weight(graph, table.producers, c)) is not None and found[0] == name]
        if len(readers) != 1:
            return f"'{name}' is read by {len(readers)} stream contractions"
        # the node on the reader's path that reads the constant itself (the MatMul or its Transpose)
        tensor, node = readers[0].weight, nodes[readers[0].node]
        while tensor != name:
            node = table.producers[tensor]
            if len(table.consumers.get(tensor, [])) != 1:
                return f"'{tensor}' (on the path from '{name}' to its reader) has other uses"
            tensor = node.inputs[0]
        copy = f"{name}.untied"
        while copy in graph.constants or copy in graph.tensors:
            copy += "_"
        graph.constants[copy] = value
        index = node.inputs.index(name)
        node.inputs[index] = copy
        undo.append(lambda node=node, index=index, copy=copy: (node.inputs.__setitem__(index, name),
                                                               graph.constants.pop(copy)))
    return undo


def _apply(graph, analysis, rotation) -> list | str:
    """Write ``rotation`` into the graph's constants (untying where it must); its undo steps."""
    previous = {name: graph.constants[name] for name in rotation.values}
    undo = _untie(graph, analysis, rotation)
    if isinstance(undo, str):
        return undo
    graph.constants.update(rotation.values)
    return undo + [lambda: graph.constants.update(previous)]


def rotate_onnx_streams(graph, fit: list[dict], checks: list[dict]) -> dict:
    """Rotate every RMSNorm-read stream group of ``graph`` in place (see the module docstring)."""
    analysis = analyse(graph)
    groups = stream_groups(analysis)
    if not groups:
        return {"rotated": [], "skipped": {}, "reason": NO_STREAM}
    wanted = stream_inputs(analysis, groups)
    model = to_onnx(graph)
    stats = collect_onnx_statistics(model, fit, wanted, gram=set(wanted))
    reference = run_all(model, checks)
    del model
    return rotate_groups(analysis, groups, stats, lambda rotation: _apply(graph, analysis, rotation),
                         lambda: output_error(reference, to_onnx(graph), checks))
