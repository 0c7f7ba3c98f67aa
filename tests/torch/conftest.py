"""The two ATen tracers a failed symbolic trace falls to, both kept under test.

A test parametrized with the value ``"torch.export"`` (as ``tracer``, ``export_only`` or
``force_export``) runs with the concrete trace refused, and one with ``"concrete"`` with the
concrete trace allowed for any module (by default only Hugging Face models use it), so both
the torch.export path (for other modules, calibration, and results returned as a graph) and
the concrete one are covered.
"""

import pytest

import graphprune.frontends.concrete as concrete


def _refused(module, example_inputs):
    raise RuntimeError("concrete trace refused by the test")


@pytest.fixture(autouse=True)
def _aten_tracer_asked(request, monkeypatch):
    callspec = getattr(request.node, "callspec", None)
    values = [v for v in (callspec.params.values() if callspec is not None else ()) if isinstance(v, str)]
    if "torch.export" in values:
        monkeypatch.setattr(concrete, "concrete_trace", _refused)
    elif "concrete" in values:  # the concrete trace also for modules outside Hugging Face
        monkeypatch.setattr("graphprune.torch_prune.concrete_first", lambda module, calibration: True)


def _tracer_used(asked: str, report: dict) -> str:
    if asked == "concrete" and report["torch"]["returned"] != "original module":
        return "torch.export"
    return asked


@pytest.fixture
def tracer_used():
    """``tracer_used(asked, report)``: the tracer a prune asked to use ``asked`` ends on. A
    concrete trace serves only when the original class is returned; a graph to return comes
    from torch.export, which prunes again."""
    return _tracer_used
