"""Weight-norm importance (graphprune.importance) on half-precision weights."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from graphprune.importance import CHUNK_ELEMENTS, _per_slice


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_half_precision_sums_match_float32_and_do_not_overflow(dtype, criterion):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((3, CHUNK_ELEMENTS // 1000 + 7, 1000)) * 8).astype(dtype)  # Σw² ≫ 65504
    for axis in range(3):
        got = _per_slice(w, axis, criterion)
        wide = w.astype(np.float64)
        others = tuple(a for a in range(3) if a != axis)
        want = (wide ** 2).sum(axis=others) if criterion == "l2" else np.abs(wide).sum(axis=others)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-2)  # float32 running sums over millions of terms: ranking-grade
    ones = np.ones((2, 100_000), dtype=dtype)
    assert _per_slice(ones, 0, "l2").tolist() == [100_000.0, 100_000.0]  # float16 alone would give inf
