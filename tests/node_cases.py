"""onnx's backend node tests as graphprune inputs: every case onnxruntime itself passes.

The cases are generated from ``onnx.backend.test.case.node`` (as onnx's own
tooling does to write its test data), each a one-node model with inputs and
expected outputs. :func:`run_case` writes a case to disk, runs a graphprune
command on it in-process and, on exit 0, runs the output in onnxruntime on the
case's inputs against the expected outputs, so a changed function is caught,
not only a crash.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

COMMANDS = {"fold": ["fold"], "prune": ["prune", "--ratio", "0.5"]}


@dataclass
class Outcome:
    case: str
    command: str
    code: int
    stderr: str
    changed: str = ""  # why the output differs from the expected outputs ("" when it does not)


def node_cases() -> list:
    """Every node test case, sorted by name (generation prints warnings; they are silenced)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return sorted(cases, key=lambda c: c.name)


def _session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _feeds(sess, inputs) -> dict:
    names = [i.name for i in sess.get_inputs()]
    return {n: v for n, v in zip(names, inputs) if not (isinstance(v, np.ndarray) is False)}


def _mismatch(expected, actual, rtol: float, atol: float) -> str:
    """'' when ``actual`` matches ``expected`` as onnx's backend runner checks it."""
    if len(expected) != len(actual):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for k, (e, a) in enumerate(zip(expected, actual)):
        if not isinstance(e, np.ndarray):
            continue  # sequences/optionals: not compared here
        a = np.asarray(a)
        if e.shape != a.shape:
            return f"output {k} shape {a.shape}, expected {e.shape}"
        if e.dtype.kind in "fc":
            try:
                np.testing.assert_allclose(a.astype(e.dtype), e, rtol=rtol, atol=atol, equal_nan=True)
            except AssertionError:
                return f"output {k} values differ"
        elif e.dtype == object:
            if not np.array_equal(a.astype(object), e):
                return f"output {k} values differ"
        elif not np.array_equal(a, e):
            return f"output {k} values differ"
    return ""


def ort_passes(case) -> bool:
    """Does onnxruntime itself run the case and reproduce its expected outputs?"""
    if not case.data_sets:
        return False
    try:
        sess = _session(case.model)
        for inputs, expected in case.data_sets:
            if any(not isinstance(v, np.ndarray) for v in inputs):
                return False
            names = [i.name for i in sess.get_inputs()]
            if len(names) != len(inputs):
                return False
            got = sess.run(None, dict(zip(names, inputs)))
            if _mismatch(expected, got, case.rtol, case.atol):
                return False
    except Exception:
        return False
    return True


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``graphprune ARGV`` in-process: (exit code, stderr)."""
    from graphprune import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
    return code, err.getvalue()


def run_case(case, command: str, workdir: Path) -> Outcome:
    """Run ``graphprune COMMAND`` on one case; on exit 0 check the output against the case."""
    src = workdir / f"{case.name}.onnx"
    dst = workdir / f"{case.name}.{command}.onnx"
    if not src.exists():
        onnx.save(case.model, str(src))
    argv = [COMMANDS[command][0], str(src), "-o", str(dst), *COMMANDS[command][1:]]
    code, stderr = run_cli(argv)
    outcome = Outcome(case.name, command, code, stderr.strip())
    if code == 0:
        try:
            onnx.checker.check_model(onnx.load(str(dst)), full_check=True)
            sess = _session(dst)
            names = [i.name for i in sess.get_inputs()]
            for inputs, expected in case.data_sets:
                got = sess.run(None, dict(zip(names, inputs)))
                outcome.changed = _mismatch(expected, got, case.rtol, case.atol)
                if outcome.changed:
                    break
        except Exception as exc:
            outcome.changed = f"output unusable: {exc.__class__.__name__}: {str(exc)[:200]}"
    return outcome


def sample(cases: list, every: int) -> list:
    """Every ``every``-th case (a fixed, spread-out sample)."""
    return cases[::every]
