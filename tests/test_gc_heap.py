"""graphprune/gc_heap.py: while a pass runs, the objects that existed at its start are frozen
(skipped by every collection), and afterwards they are back, also after an error or nesting."""

from __future__ import annotations

import gc

import pytest

from graphprune.gc_heap import heap_frozen


def test_objects_are_frozen_during_the_call_only():
    before = gc.get_freeze_count()
    seen = []

    @heap_frozen
    def inner():
        seen.append(gc.get_freeze_count())

    @heap_frozen
    def outer():
        seen.append(gc.get_freeze_count())
        inner()
        garbage = []
        garbage.append(garbage)  # a cycle made during the pass is still collected
        del garbage
        seen.append(gc.collect())

    outer()
    assert seen[0] > 0 and seen[1] == seen[0]  # nested: frozen once
    assert seen[2] >= 1
    assert gc.get_freeze_count() == before


def test_an_error_still_unfreezes():
    @heap_frozen
    def failing():
        assert gc.get_freeze_count() > 0
        raise ValueError("boom")

    with pytest.raises(ValueError):
        failing()
    assert gc.get_freeze_count() == 0


def test_the_api_passes_freeze(tmp_path):
    import graphprune

    counts = []
    graphprune.prune(_tiny_onnx(tmp_path), 0.5, progress=lambda event: counts.append(gc.get_freeze_count()))
    assert counts and min(counts) > 0
    assert gc.get_freeze_count() == 0


def _tiny_onnx(tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(path), dynamo=False)
    return str(path)


def test_objects_the_process_froze_itself_stay_frozen():
    @heap_frozen
    def call():
        return gc.get_freeze_count()

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert call() == frozen
        assert gc.get_freeze_count() == frozen  # not thawed by the pass
    finally:
        gc.unfreeze()
