"""The smallest variant of every timm family through the PyTorch front end (``-m zoo``).

Each is pruned at ratio 0.3 with zero configuration, verified by the torch
oracle (exact, or approximate where a pruned group passes a normalisation over
its channels), must run on its example with unchanged output shapes, and must
lose parameters and MACs, except the families of :data:`NOTHING_PRUNABLE`.

The family list is computed from ``timm.list_models()`` (parameter counts on
the meta device, cached per timm version), so it is only built when zoo tests
are selected; otherwise the test is collected with no parameters.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils import _pytree as pytree

import graphprune

pytest.importorskip("timm")

from graphprune.models.timm_zoo import build_timm, family_of, timm_family_names  # noqa: E402

pytestmark = pytest.mark.zoo

RATIO = 0.3

NOTHING_PRUNABLE: dict[str, str] = {}
"""timm family -> why none of its channels can be removed by design (the test fails once they can).

Empty on purpose: every family that prunes nothing today does so because of an
untranslated op (a front-end gap to fix, so its test should fail), not because
its structure pins every channel.
"""


def _zoo_selected(config) -> bool:
    expr = config.getoption("markexpr") or ""
    return not expr or (re.search(r"\bzoo\b", expr) is not None and re.search(r"\bnot\s+zoo\b", expr) is None)


def pytest_generate_tests(metafunc):
    if "timm_name" in metafunc.fixturenames:
        names = timm_family_names() if _zoo_selected(metafunc.config) else []
        metafunc.parametrize("timm_name", names)


def _shapes(output) -> list:
    return [tuple(t.shape) for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor)]


def test_timm_family_prunes(timm_name):
    model, x = build_timm(timm_name)
    with torch.no_grad():
        expected = _shapes(model(x))
    result = graphprune.prune(model, RATIO, example_inputs=(x,))
    assert result.verification.status in ("exact", "approximate"), result.verification.message
    with torch.no_grad():
        assert _shapes(result.model(x)) == expected
    report = result.report
    if family_of(timm_name) in NOTHING_PRUNABLE:
        assert not report["initializers"], f"{timm_name} now prunes: drop it from NOTHING_PRUNABLE"
        return
    assert report["initializers"], f"nothing pruned; pinned: {[g['pinned'] for g in report['pinned']][:3]}"
    assert report["params"][1] < report["params"][0]
    assert report["macs"][1] < report["macs"][0]
