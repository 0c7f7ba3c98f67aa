"""onnx's backend node tests through `fold` and `prune`: on every case onnxruntime itself
passes, no exit 1 or 3, no changed output, and an exit 2 is one line naming the file.

A spread-out sample runs by default (about half a minute); every case with `-m zoo`.
"""

import pytest

from node_cases import node_cases, ort_passes, run_case, sample

SAMPLE_EVERY = 6


@pytest.fixture(scope="module")
def cases():
    return [c for c in node_cases() if ort_passes(c)]


def _check(cases, command, tmp_path):
    bad, refused = [], []
    for case in cases:
        o = run_case(case, command, tmp_path)
        if o.code in (1, 3) or o.changed or o.code not in (0, 2):
            bad.append(f"{o.case}: exit {o.code} {o.changed} {o.stderr[:200]}")
        elif o.code == 2:
            lines = o.stderr.splitlines()
            if len(lines) != 1 or case.name not in lines[0]:
                bad.append(f"{o.case}: exit 2 without one line naming the file: {o.stderr[:300]}")
            refused.append(o.case)
    return bad, refused


@pytest.mark.parametrize("command", ["fold", "prune"])
def test_node_tests_sample(cases, command, tmp_path):
    chosen = sample(cases, SAMPLE_EVERY)
    assert len(chosen) > 200
    bad, refused = _check(chosen, command, tmp_path)
    assert not bad, "\n".join(bad)
    assert len(refused) <= 2, refused  # only models onnx.checker itself rejects (test_mvn's function body)


@pytest.mark.zoo
@pytest.mark.parametrize("command", ["fold", "prune"])
def test_node_tests_all(cases, command, tmp_path):
    bad, refused = _check(cases, command, tmp_path)
    assert not bad, "\n".join(bad)
    assert len(refused) <= 0.01 * len(cases), refused
