"""Progress reporting: the steps a prune reports, silence by default, and the CLI's stderr."""

import io
import subprocess
import sys

import pytest

import graphprune
from graphprune import progress
from graphprune.progress import Recorder, RichReporter, step


@pytest.fixture(scope="module")
def model(export):
    return export("tiny_cnn", "legacy")


def test_prune_reports_its_steps_in_order(model):
    recorder = Recorder()
    graphprune.prune(model, ratio=0.5, progress=recorder)
    names = recorder.names
    for expected in ("load", "shape inference", "prune-channels", "grouping", "importance (l2)", "emission",
                     "verification"):
        assert expected in names, names
    assert names.index("load") < names.index("grouping") < names.index("emission") < names.index("verification")
    by_name = {s.name: s for s in recorder.finished}
    assert by_name["grouping"].depth == 1 and by_name["prune-channels"].depth == 0  # nested in the pass
    importance = by_name["importance (l2)"]
    assert importance.total and importance.done == importance.total  # a bar: one count per group
    assert len(recorder.finished) == len(recorder.started)  # every step ended


def test_callback_gets_start_advance_end_and_default_is_silent(model):
    events = []
    graphprune.inspect(model, progress=events.append)
    kinds = {(e.kind, e.name) for e in events}
    assert ("start", "grouping") in kinds and ("end", "grouping") in kinds
    assert events[0].kind == "start" and events[-1].kind == "end"
    assert progress.current() is progress.SILENT  # the callback was only current for the call
    recorder = Recorder()
    progress.install(recorder)  # what the CLI does; progress=False silences it for one call
    try:
        graphprune.inspect(model, progress=False)
        assert recorder.started == []
        graphprune.inspect(model)  # None: the installed reporter hears it
        assert "grouping" in recorder.names
    finally:
        progress.install(progress.SILENT)


def test_step_that_raises_still_ends_and_bad_progress_is_refused():
    recorder = Recorder()
    with progress.using(recorder), pytest.raises(ValueError):
        with step("outer"), step("inner", total=3) as s:
            s.advance()
            raise ValueError("boom")
    assert [s.name for s in recorder.finished] == ["inner", "outer"]
    assert recorder.finished[0].done == 1
    with pytest.raises(graphprune.GraphpruneError, match="progress="):
        graphprune.inspect("unused.onnx", progress=3)


def test_rich_reporter_draws_bars_and_clears_the_display():
    out = io.StringIO()
    from rich.console import Console

    reporter = RichReporter(Console(file=out, force_terminal=True, width=100))
    with progress.using(reporter):
        with step("importance (l2)", total=4) as s:
            for _ in range(4):
                s.advance()
        with step("verification"):
            pass
    text = out.getvalue()
    assert "importance (l2)" in text and "verification" in text
    assert reporter._progress is None  # stopped once the outermost step ended


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "graphprune.cli", *map(str, args)],
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def test_cli_stderr_is_clean_when_not_a_terminal_and_quiet_silences(model, tmp_path, capsys):
    code, stdout, stderr = _cli("prune", model, "-o", tmp_path / "a.onnx", "--ratio", "0.5")
    assert code == 0, stderr
    assert stderr == ""  # no progress noise in a pipe
    assert "verification: exact" in stdout
    from graphprune import cli

    assert cli.main(["--quiet", "prune", str(model), "-o", str(tmp_path / "b.onnx"), "--ratio", "0.5"]) == 0
    out = capsys.readouterr()
    assert out.out == "" and out.err == "" and (tmp_path / "b.onnx").exists()
    assert cli.main(["prune", str(model), "-o", str(tmp_path / "c.onnx"), "--ratio", "1.5", "-q"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "ratio must be in" in out.err  # errors still show
    progress.install(progress.SILENT)


def test_cli_installs_rich_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress.terminal_reporter(False, Tty()), RichReporter)
    assert progress.terminal_reporter(True, Tty()) is progress.SILENT
    assert progress.terminal_reporter(False, io.StringIO()) is progress.SILENT


def test_fold_and_module_prune_report_their_steps(model):
    recorder = Recorder()
    graphprune.fold(model, progress=recorder)
    names = recorder.names
    assert names[:2] == ["load", "shape inference"] and "fold-batchnorm" in names and "dce" in names
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    recorder = Recorder()
    graphprune.prune(net, ratio=0.5, example_inputs=torch.randn(1, 3, 8, 8), progress=recorder)
    names = recorder.names
    for expected in ("tracing", "grouping", "importance (l2)", "emission", "verification"):
        assert expected in names, names
    assert names.index("tracing") < names.index("grouping") < names.index("emission") < names.index("verification")
