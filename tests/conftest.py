"""Shared fixtures: ONNX exports of zoo models, cached across runs (``GRAPHPRUNE_CACHE``)."""

import pytest

from graphprune import models


@pytest.fixture(scope="session")
def export():
    """``export(name, exporter="legacy") -> Path`` of a cached ONNX export."""
    return lambda name, exporter="legacy": models.export_onnx(name, exporter)
