"""Export zoo models to ONNX once and reuse the file from a shared cache.

Exports take seconds per model and every test wants the same files, so
they are cached on disk. Files are written to a temp name and renamed into
place, so parallel pytest workers either see a complete file or none.
"""

import contextlib
import hashlib
import io
import os
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import onnx
import torch
import torchvision

from .zoo import _check_name, build, example_input

MODEL_INPUT_NAME = "input"
MODEL_OUTPUT_NAME = "output"
LEGACY_OPSET = 17
EXPORTERS = ("legacy", "dynamo")


def cache_root(cache_dir=None):
    """``cache_dir``, else ``$GRAPHPRUNE_CACHE``, else ``~/.cache/graphprune/models``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("GRAPHPRUNE_CACHE"):
        return Path(os.environ["GRAPHPRUNE_CACHE"])
    return Path.home() / ".cache" / "graphprune" / "models"


@lru_cache(maxsize=1)
def _zoo_source_hash():
    """Hash of this package's source: editing a model definition invalidates its cached export."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def cache_path(name, exporter="legacy", opset=None, cache_dir=None):
    """Where ``export_onnx`` stores (or finds) this export; nothing is written."""
    _check_name(name)
    opset = _resolve_opset(exporter, opset)
    # The dynamo default opset is fixed per torch release, which is in the key.
    opset_tag = "default" if opset is None else str(opset)
    versions = f"torch{torch.__version__}-tv{torchvision.__version__}-{_zoo_source_hash()}"
    return cache_root(cache_dir) / f"{name}-{exporter}-opset{opset_tag}-{versions}.onnx"


def _resolve_opset(exporter, opset):
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    return LEGACY_OPSET if opset is None and exporter == "legacy" else opset


@contextlib.contextmanager
def _quiet():
    """Swallow exporter chatter (deprecation warnings, dynamo progress lines)."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def _export(name, path, exporter, opset):
    model, x = build(name), example_input(name)
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=exporter == "dynamo",
            opset_version=opset,
            input_names=[MODEL_INPUT_NAME],
            output_names=[MODEL_OUTPUT_NAME],
            # The dynamo exporter defaults to a side-car weights file; one
            # self-contained .onnx is what the cache and the pruner expect.
            external_data=False,
            verbose=False,
        )


def _check_opset(path, opset):
    """The dynamo exporter cannot go below opset 18 and silently keeps 18; refuse that."""
    if opset is None:
        return
    imports = onnx.load(path, load_external_data=False).opset_import
    found = {o.version for o in imports if o.domain in ("", "ai.onnx")}
    if found != {opset}:
        raise ValueError(f"asked for opset {opset} but the exporter produced {sorted(found)}")


def write_cached(path, name, write):
    """Run ``write(tmp)`` into a temp file beside ``path``, then rename it into place.

    Parallel pytest workers see a complete file or none; ``write`` raises to
    refuse the export (nothing is cached then). Over 2 GB the dynamo exporter
    writes external data keyed to the temp name regardless, which the renamed
    file could not find: refused too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    side_car = Path(tmp + ".data")
    try:
        write(tmp)
        if side_car.exists():
            raise ValueError(f"{name} is too large for a single-file ONNX export")
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a shared cache must be readable
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        side_car.unlink(missing_ok=True)
    return path


def export_onnx(name, exporter="legacy", opset=None, cache_dir=None):
    """Path to a cached ONNX export of ``build(name)`` on ``example_input(name)``.

    ``exporter="legacy"`` is the TorchScript exporter (``dynamo=False``,
    opset 17 by default); ``"dynamo"`` is the torch.export-based one at its
    own default opset (an explicit ``opset`` below 18 raises, since that
    exporter cannot honour it). Shapes are static, the graph input is named
    ``"input"`` and the output ``"output"``.
    """
    opset = _resolve_opset(exporter, opset)
    path = cache_path(name, exporter, opset, cache_dir)
    if path.exists():
        return path

    def write(tmp):
        _export(name, tmp, exporter, opset)
        _check_opset(tmp, opset)

    return write_cached(path, name, write)
