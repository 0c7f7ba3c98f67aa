"""Malformed models exit 2 with one line naming the file and the node or tensor; valid but odd
models (unsorted nodes, duplicate node names, custom-domain ops) are handled, not refused."""

import os
import signal

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import mutations as mut
from graphprune import signals
from node_cases import run_cli


def _write(tmp_path, model, name="model.onnx"):
    path = tmp_path / name
    path.write_bytes(model.SerializeToString() if isinstance(model, onnx.ModelProto) else model)
    return path


def _mutated(fn, seed=0):
    model = mut.conv_net()
    fn(model, np.random.default_rng(seed))
    return model


def _run(ort_model_path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    sess = ort.InferenceSession(str(ort_model_path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    return sess.run(None, {"x": x})[0]


MALFORMED = [
    (mut.drop_node, "reads '"),
    (mut.dangling_input, "reads 'missing_tensor'"),
    (mut.duplicate_output, "is defined twice"),
    (mut.self_loop, "has a cycle through"),
    (mut.cycle, "has a cycle through"),
    (mut.initializer_dims, "but holds"),
    (mut.truncate_raw_data, "but holds"),
    (mut.initializer_dtype, "onnx.checker"),
    (mut.unknown_op, "NoSuchOp"),
    (mut.no_opset, "imports no opset"),
    (mut.ir_version, "IR version"),
    (mut.input_dtype, "graph input 'x'"),
    (mut.output_dtype, "onnx.checker"),
    (mut.missing_output, "graph output 'not_computed'"),
    (mut.no_outputs, "no outputs"),
    (mut.duplicate_input, "graph input 'x' is declared twice"),
    (mut.empty_constant, "Constant"),
]


@pytest.mark.parametrize("command", ["prune", "fold"])
@pytest.mark.parametrize("mutation,needle", MALFORMED, ids=[m.__name__ for m, _ in MALFORMED])
def test_malformed_model_exits_2_with_one_line(tmp_path, mutation, needle, command):
    src = _write(tmp_path, _mutated(mutation))
    before = src.read_bytes()
    out = tmp_path / "out.onnx"
    argv = [command, str(src), "-o", str(out)] + (["--ratio", "0.5"] if command == "prune" else [])
    code, stderr = run_cli(argv)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and str(src) in lines[0] and needle in lines[0], stderr
    assert not out.exists() and src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("data,needle", [(b"", "holds no graph"), (b"\x08\x07\x12\xff\xff", "not a readable"),
                                         (b"garbage" * 10, "not a readable")])
def test_empty_and_damaged_files_exit_2(tmp_path, data, needle):
    src = _write(tmp_path, data)
    for command in (["fold"], ["prune", "--ratio", "0.5"]):
        code, stderr = run_cli([command[0], str(src), "-o", str(tmp_path / "out.onnx"), *command[1:]])
        assert code == 2 and needle in stderr and str(src) in stderr, stderr
        assert not (tmp_path / "out.onnx").exists()


def test_invalid_utf8_name_is_refused(tmp_path):
    data = mut.conv_net().SerializeToString().replace(b"conv2b", b"co\xd9v2b", 1)
    src = _write(tmp_path, data)
    code, stderr = run_cli(["prune", str(src), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5"])
    assert code == 2 and "not valid UTF-8" in stderr, stderr


def test_huge_input_is_refused_before_allocating(tmp_path):
    src = _write(tmp_path, _mutated(mut.huge_dim))
    code, stderr = run_cli(["prune", str(src), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5"])
    assert code == 2 and "--no-verify" in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_unsorted_graph_is_sorted_not_refused(tmp_path):
    model = mut.conv_net()
    reference = _run(_write(tmp_path, model, "ref.onnx"))
    shuffled = _mutated(mut.shuffle_nodes, seed=3)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(shuffled)
    src = _write(tmp_path, shuffled)
    for command in (["fold"], ["prune", "--ratio", "0.5"]):
        out = tmp_path / f"{command[0]}.onnx"
        code, stderr = run_cli([command[0], str(src), "-o", str(out), *command[1:]])
        assert code == 0, stderr
        onnx.checker.check_model(onnx.load(str(out)), full_check=True)
        if command[0] == "fold":
            np.testing.assert_allclose(_run(out), reference, rtol=1e-4, atol=1e-5)


def test_duplicate_node_names_are_made_unique(tmp_path):
    src = _write(tmp_path, _mutated(mut.renamed_nodes))
    out = tmp_path / "out.onnx"
    code, stderr = run_cli(["prune", str(src), "-o", str(out), "--ratio", "0.5"])
    assert code == 0, stderr
    names = [n.name for n in onnx.load(str(out)).graph.node if n.name]
    assert len(names) == len(set(names))


def _custom_gap_model():
    model = mut.conv_net()
    gap = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool")
    gap.domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    return model


def test_custom_domain_op_needs_no_verify_and_pins_its_channels(tmp_path):
    src = _write(tmp_path, _custom_gap_model())
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    code, stderr = run_cli(["prune", str(src), "-o", str(out), "--ratio", "0.5"])
    assert code == 2 and "--no-verify" in stderr and "com.example:GlobalAveragePool" in stderr, stderr
    assert not out.exists()
    code, stderr = run_cli(["prune", str(src), "-o", str(out), "--ratio", "0.5", "--no-verify",
                            "--report", str(report)])
    assert code == 0, stderr
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
    assert dims["w3"] == [8, 1, 3, 3] and dims["fc_w"] == [10, 8]  # what reaches the custom op is kept
    assert dims["w2"][0] == 6  # the branch inside the residual block is pruned


def test_custom_domain_op_with_nothing_to_prune_exits_0(tmp_path):
    model = _custom_gap_model()
    relu = next(n for n in model.graph.node if n.name == "relu2a")
    relu.domain = "com.example"  # now every group reaches a custom op
    src = _write(tmp_path, model)
    out = tmp_path / "out.onnx"
    code, stderr = run_cli(["prune", str(src), "-o", str(out), "--ratio", "0.5"])
    assert code == 0, stderr
    assert onnx.load(str(out)).graph.node[-1].op_type == "Gemm"


def test_sigterm_mid_run_exits_143_and_writes_nothing(tmp_path, monkeypatch):
    src = _write(tmp_path, mut.conv_net())
    out = tmp_path / "out.onnx"
    import graphprune.api as api

    real = api.verify_prune

    def slow_verify(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the check runs
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "verify_prune", slow_verify)
    try:
        code, stderr = run_cli(["prune", str(src), "-o", str(out), "--ratio", "0.5"])
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert code == 143 and "interrupted" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_sigint_while_writing_waits_for_the_outputs(tmp_path, monkeypatch):
    src = _write(tmp_path, mut.conv_net())
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    import graphprune.cli as cli

    real = cli._save_like_input

    def interrupted_save(*args):
        os.kill(os.getpid(), signal.SIGINT)  # arrives between the model and its report
        real(*args)

    monkeypatch.setattr(cli, "_save_like_input", interrupted_save)
    try:
        code, stderr = run_cli(["prune", str(src), "-o", str(out), "--ratio", "0.5", "--report", str(report)])
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert code == 130
    assert out.exists() and report.exists()  # both, never one without the other
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_signals_deferred_raises_after_the_block():
    signals.install()
    try:
        with pytest.raises(signals.Interrupted) as info:
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                finished = True
        assert finished and info.value.exit_code == 143
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.mark.parametrize("command", ["prune", "fold", "inspect"])
def test_a_large_truncated_weight_exits_2_naming_it(tmp_path, command):
    """Raw tensors over validate.RAW_CHECK_MAX_BYTES are size-checked when decoded, not by the
    validator: the same one-line error, nothing written."""
    from graphprune.validate import RAW_CHECK_MAX_BYTES

    w = np.zeros((RAW_CHECK_MAX_BYTES // 4 // 64 + 1, 64), np.float32)  # just over the threshold
    big = onnx.numpy_helper.from_array(w, "w")
    big.raw_data = big.raw_data[:-4]
    model = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, w.shape[0]])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 64])], [big]),
        opset_imports=[helper.make_opsetid("", 17)])
    src = _write(tmp_path, model)
    out = tmp_path / "out.onnx"
    argv = {"prune": ["prune", str(src), "-o", str(out), "--ratio", "0.5"],
            "fold": ["fold", str(src), "-o", str(out)], "inspect": ["inspect", str(src)]}[command]
    code, stderr = run_cli(argv)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and str(src) in lines[0] and "initializer 'w'" in lines[0] and "but holds" in lines[0]
    assert not out.exists()
