"""Seeded protobuf mutations of a small conv net through `fold` and `prune`.

Every outcome must be one of: exit 0 with a checker-valid output that onnxruntime loads
(and, for `fold`, reproduces the input where the input runs), or exit 1/2 with one line
and nothing written. Never exit 3, never a changed input or a stray file. A fixed budget
runs by default; a longer run with `-m zoo`.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mutations import BYTE_MUTATIONS, MUTATIONS, mutant, run_mutant

DEFAULT_BUDGET = 2 * (len(MUTATIONS) + len(BYTE_MUTATIONS))  # each mutation alone, then with a second one
ZOO_BUDGET = 1500


def _session(data):
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _fold_reproduces_input(seed, out) -> str:
    """'' when the folded model computes what the mutant computes (or the mutant does not run)."""
    try:
        src = _session(mutant(seed)[1])
        feeds = {}
        for i in src.get_inputs():
            shape = [d if isinstance(d, int) else 2 for d in i.shape]
            feeds[i.name] = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        expected = src.run(None, feeds)
    except Exception:
        return ""  # the mutant does not run on float inputs: nothing to compare
    got = _session(str(out)).run(None, feeds)
    for e, g in zip(expected, got):
        if e.shape != g.shape or not np.allclose(e, g, rtol=1e-3, atol=1e-4, equal_nan=True):
            return "fold changed the outputs"
    return ""


def _judge(seeds, command, tmp_path):
    problems, codes = [], []
    for seed in seeds:
        r = run_mutant(seed, command, tmp_path)
        codes.append(r.code)
        where = f"seed {seed} ({r.mutation}): exit {r.code}"
        if r.code not in (0, 1, 2):
            problems.append(f"{where}: {r.stderr[:300]}")
        if r.code != 0 and len(r.stderr.splitlines()) != 1:
            problems.append(f"{where}: not one line: {r.stderr[:300]}")
        if r.invalid_output or r.input_changed or r.stray_files:
            problems.append(f"{where}: {r.invalid_output} input changed={r.input_changed} "
                            f"stray={r.stray_files}")
        if r.code == 0 and command == "fold":
            changed = _fold_reproduces_input(seed, tmp_path / f"{command}-{seed}" / "out.onnx")
            if changed:
                problems.append(f"{where}: {changed}")
    return problems, codes


@pytest.mark.parametrize("command", ["fold", "prune"])
def test_fuzzed_models_fixed_budget(command, tmp_path):
    problems, codes = _judge(range(DEFAULT_BUDGET), command, tmp_path)
    assert not problems, "\n".join(problems)
    assert codes.count(0) >= 5 and codes.count(2) >= len(MUTATIONS)  # both kinds are exercised


@pytest.mark.zoo
@pytest.mark.parametrize("command", ["fold", "prune"])
def test_fuzzed_models_long_run(command, tmp_path):
    problems, _ = _judge(range(DEFAULT_BUDGET, DEFAULT_BUDGET + ZOO_BUDGET), command, tmp_path)
    assert not problems, "\n".join(problems[:50])
