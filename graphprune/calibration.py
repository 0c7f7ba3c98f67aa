"""Calibration data and the per-channel activation statistics gathered from it.

Activation-aware importance and weight repair need, for the input ``x`` of
every contraction (the operand a Conv/Gemm/MatMul sums over) and along its
contracted axis, the running sums

* ``n``: number of samples (every position of every batch: batch × tokens, or
  batch × pixels),
* ``s = Σ x_j`` and ``q = Σ x_j²`` per channel ``j``,
* optionally the Gram matrix ``G = Σ x xᵀ`` (channels × channels), for least
  squares.

They are accumulated batch by batch in float64, so no activation is kept
once its batch is done. ``E[x] = s/n``, ``E[x²] = q/n``,
``Var[x] = q/n − (s/n)²``, ``Cov = G/n − E[x]E[x]ᵀ``.

Calibration input is an iterable of samples (a ``DataLoader`` included):
each a tensor/array, a tuple of them (positional inputs), or a dict keyed by
input name. On the command line it is a ``.npz`` file (arrays keyed by input
name, the first axis the batch) or a directory of them.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError


@dataclass
class ChannelStats:
    """Running sums of one activation along one axis (see the module docstring)."""

    count: int
    total: np.ndarray  # Σ x_j
    squares: np.ndarray  # Σ x_j²
    gram: np.ndarray | None = None  # Σ x xᵀ

    @classmethod
    def empty(cls, channels: int, gram: bool = False) -> "ChannelStats":
        return cls(0, np.zeros(channels), np.zeros(channels),
                   np.zeros((channels, channels)) if gram else None)

    def add(self, rows: np.ndarray) -> None:
        """Accumulate ``rows`` [samples, channels]."""
        rows64 = rows.astype(np.float64, copy=False)
        self.count += rows.shape[0]
        self.total += rows64.sum(axis=0)
        self.squares += np.einsum("nc,nc->c", rows64, rows64)
        if self.gram is not None:
            self.gram += rows64.T @ rows64

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    @property
    def second_moment(self) -> np.ndarray:
        return self.squares / max(self.count, 1)

    @property
    def variance(self) -> np.ndarray:
        return np.maximum(self.second_moment - self.mean ** 2, 0.0)

    def moments(self, centred: bool) -> np.ndarray:
        """``E[x xᵀ]``, or the covariance when ``centred``."""
        if self.gram is None:
            raise ValueError("these statistics were gathered without a Gram matrix")
        moment = self.gram / max(self.count, 1)
        return moment - np.outer(self.mean, self.mean) if centred else moment


def as_rows(value: np.ndarray, axis: int) -> np.ndarray:
    """``value`` with ``axis`` last, flattened to [samples, channels]."""
    return np.moveaxis(value, axis, -1).reshape(-1, value.shape[axis])


def take(samples, limit: int | None):
    """The first ``limit`` samples (all when None), validating the count."""
    if limit is not None and limit < 1:
        raise InputError(f"--calibration-samples must be a positive integer, got {limit}")
    return list(itertools.islice(iter(samples), limit))


def load_npz(path: str | os.PathLike, limit: int | None = None,
             batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """Calibration batches from an ``.npz`` file or a directory of them (sorted by name).

    Each file holds arrays keyed by graph input name, the first axis the
    samples; it is cut into batches of ``batch_size`` rows. ``limit`` counts
    samples, so a big file can be cut short.
    """
    if limit is not None and limit < 1:
        raise InputError(f"--calibration-samples must be a positive integer, got {limit}")
    root = Path(path)
    if root.is_dir():
        files = sorted(root.glob("*.npz"))
        if not files:
            raise InputError(f"calibration directory '{root}' holds no .npz files")
    elif root.is_file():
        files = [root]
    else:
        raise InputError(f"calibration data '{root}' does not exist")
    batches, seen = [], 0
    for file in files:
        try:
            with np.load(file, allow_pickle=False) as data:
                batch = {key: np.asarray(data[key]) for key in data.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read calibration file '{file}': {exc} (expected an .npz of "
                             "arrays keyed by input name)") from exc
        if not batch:
            raise InputError(f"calibration file '{file}' holds no arrays")
        rows = {v.shape[0] if v.ndim else 1 for v in batch.values()}
        if len(rows) != 1:
            raise InputError(f"calibration file '{file}': arrays disagree on the batch size "
                             f"({sorted(rows)}); the first axis of every input is the batch")
        total = rows.pop()
        if limit is not None:
            total = min(total, limit - seen)
        for start in range(0, total, batch_size):  # bounded memory per run, and a held-out part
            stop = min(start + batch_size, total)
            batches.append({k: v[start:stop] for k, v in batch.items()})
        seen += total
        if limit is not None and seen >= limit:
            break
    return batches


def split_held_out(batches: list, fraction: float = 0.25) -> tuple[list, list]:
    """Batches for statistics and a disjoint held-out part for the repaired model's report.

    With a single batch both are the same batch (said in the report).
    """
    if len(batches) < 2:
        return batches, batches
    held = max(1, int(round(len(batches) * fraction)))
    return batches[:-held], batches[-held:]


def calibration_report(rows: list[int], fit: list, held_out: list, statistics: int, outcome: dict) -> dict:
    """``report["calibration"]``: samples and batches used, how many were held out (0 when the
    single batch judged itself), the statistics gathered and the repair outcome."""
    return {"samples": sum(rows), "batches": len(rows), "statistics_from": len(fit),
            "held_out": len(held_out) if held_out is not fit else 0, "statistics": statistics, **outcome}
