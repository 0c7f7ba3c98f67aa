"""inspect/prune --plot and --html: files written atomically, real pictures, self-contained pages."""

import re
import struct
import subprocess
import sys

import pytest

from graphprune import cli, plots
from graphprune.errors import InputError
from graphprune.html_report import render_html


@pytest.fixture(scope="module")
def model(export):
    return export("tiny_cnn", "legacy")


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "graphprune.cli", *map(str, args)],
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def test_prune_plot_and_html(model, tmp_path):
    png, page = tmp_path / "layers.png", tmp_path / "layers.html"
    code, stdout, stderr = _cli("prune", model, "-o", tmp_path / "out.onnx", "--ratio", "0.5",
                                "--plot", png, "--html", page)
    assert code == 0, stderr
    assert f"{png}" in stdout and f"{page}" in stdout
    width, height = _png_size(png)
    assert 1000 <= width <= 2000 and 300 <= height <= 2000
    text = page.read_text()
    assert "<h2>Prunable groups" in text and "layers it slices" in text
    assert "<h2>Pinned groups" in text and "graph output" in text  # why the classifier's group is pinned
    assert "MACs after" in text and "data:image/png;base64," in text
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text)  # no external assets
    assert "<link" not in text and "<script" not in text
    assert not list(tmp_path.glob(".*.tmp"))  # written through temporary files that are gone


def test_inspect_plot_html_and_refusals(model, tmp_path, capsys):
    png, page = tmp_path / "i.png", tmp_path / "i.html"
    assert cli.main(["inspect", str(model), "--plot", str(png), "--html", str(page)]) == 0
    assert f"wrote {png}, {page}" in capsys.readouterr().out
    assert _png_size(png)[0] >= 1000
    text = page.read_text()
    assert "why it is pinned" in text and "activation tensors" in text and "graph input" in text
    before = model.read_bytes()
    for args, needle in ((["inspect", str(model), "--html", str(model)], "ending in .html"),
                         (["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--ratio", "0.5",
                           "--plot", str(tmp_path / "x.jpg")], "ending in .png"),
                         (["inspect", str(model), "--plot", str(tmp_path / "nodir" / "x.png")], "does not exist")):
        assert cli.main(args) == 2
        assert needle in capsys.readouterr().err
    assert model.read_bytes() == before and not (tmp_path / "o.onnx").exists()


def test_missing_matplotlib_is_exit_2_naming_the_fix(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    with pytest.raises(InputError, match=r"pip install 'graphprune\[plot\]'"):
        plots.require_matplotlib()
    code = cli.main(["inspect", str(model), "--plot", str(tmp_path / "x.png")])
    assert code == 2 and "graphprune[plot]" in capsys.readouterr().err
    # the page still renders, without the picture
    page = render_html({"params": 10, "macs": 20, "groups": [], "pinned": [], "layers": []})
    assert "graphprune[plot]" in page and "base64" not in page


def test_long_lists_are_cut_to_the_largest_and_labels_compacted():
    groups = [{"id": i, "channels": 8 + i, "parameters": [f"w{i}"], "removed": 4,
               "layers": [f"/model/encoder/layer.{i}/mlp/fc1/MatMul", "/x/y"]} for i in range(100)]
    data = {"params": [100, 50], "macs": [1000, 400], "groups": groups, "pinned": [],
            "verification": {"status": "exact"},
            "layers": [{"node": f"/model/encoder/layer.{i}/mlp/fc1/MatMul", "op": "MatMul",
                        "params": 10, "macs": 100 + i} for i in range(100)]}
    shown, total = plots._top(groups, lambda g: g["channels"], plots.MAX_ROWS)
    assert total == 100 and len(shown) == plots.MAX_ROWS and shown[0]["id"] == 100 - plots.MAX_ROWS
    labels, prefix = plots.group_labels(shown[:2])
    assert prefix == "model/encoder" and labels[0] == "g60 layer.60/mlp/fc1 +1"
    names, _ = plots.compact(["a/" + "x" * 80, "a/b"], 20)
    assert len(names[0]) == 20 and names[0].startswith("…")
    png = plots.render_png(data, data["layers"])
    assert png[:4] == b"\x89PNG" and len(png) > 20_000


def test_generated_node_names_are_called_after_their_weight():
    import numpy as np
    from types import SimpleNamespace as NS

    graph = NS(nodes=[NS(name="node_Conv_291", inputs=["x", "layer1.0.conv1.weight"]),
                      NS(name="/layer1/conv2/Conv", inputs=["y", "onnx::Conv_7"]),
                      NS(name="node_linear", inputs=["z", "fc.weight", "fc.bias"])],
               constants={"layer1.0.conv1.weight": np.zeros((2, 2, 1, 1)), "onnx::Conv_7": np.zeros((2, 2)),
                          "fc.weight": np.zeros((3, 2)), "fc.bias": np.zeros(3)})
    names = plots.readable_names(graph)
    assert names == {"node_Conv_291": "layer1.0.conv1", "node_linear": "fc"}
    data, after = plots.renamed({"layers": [{"node": "node_linear", "op": "Gemm"}],
                                 "groups": [{"id": 1, "layers": ["node_Conv_291"]}]}, None, names)
    assert data["layers"][0]["node"] == "fc" and data["groups"][0]["layers"] == ["layer1.0.conv1"]
