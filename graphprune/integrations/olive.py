"""graphprune as Olive passes: ``GraphprunePrune``, ``GraphpruneFold``, ``GraphprunePipeline``.

Olive (``pip install 'graphprune[olive]'``) chains ONNX passes in a workflow
config. These three passes run graphprune's own pass objects on an
``ONNXModel``, verified as in the CLI (the oracle for pruning, the input
model for lossless folding), and hand the smaller model to the next pass:

* ``GraphprunePrune``: the ``prune-channels`` pass. Its options are that
  pass's dataclass fields (``ratio``, ``importance``, ``global_ranking``,
  ``round_to``, ``keep``, ``exact``, ``max_group_ratio``, ``allocation``,
  ``target_macs``, ``target_params``; see ``graphprune passes``), read from the class, so they
  follow it. ``dead_channels`` / ``dce`` cleanup runs after it.
* ``GraphpruneFold``: the default lossless pipeline of ``graphprune fold``.
* ``GraphprunePipeline``: any pipeline spec (``pipeline`` option), as
  ``graphprune run --pipeline``.

All take ``verify`` (default true) and ``input_shapes`` (``{input: [dims]}``,
as ``--input-shape``), plus Olive's usual external-data options.

**Registering them.** Olive 0.13 finds a pass type through a *package
config* (``olive_config.json``: pass name → module path); a workflow can only
name passes listed there. :func:`package_config` returns Olive's own config
with these passes added, so::

    from graphprune.integrations.olive import run_workflow
    run_workflow({"input_model": {"type": "ONNXModel", "model_path": "model.onnx"},
                  "passes": {"fold": {"type": "GraphpruneFold"},
                             "prune": {"type": "GraphprunePrune", "ratio": 0.5, "round_to": 8}},
                  "output_dir": "out"})

or, with Olive's CLI::

    python -m graphprune.integrations.olive package-config -o graphprune_olive.json
    olive run --config workflow.json --package-config graphprune_olive.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

try:
    from olive.hardware import AcceleratorSpec
    from olive.model import ONNXModelHandler
    from olive.model.utils.onnx_utils import resolve_onnx_path
    from olive.passes import Pass
    from olive.passes.onnx.common import get_external_data_config, model_proto_to_olive_model
    from olive.passes.pass_config import BasePassConfig, PassConfigParam
except ImportError as exc:  # pragma: no cover - exercised only without olive-ai
    raise ImportError("graphprune.integrations.olive needs Olive: pip install 'graphprune[olive]' "
                      f"({exc})") from exc

MODULE = "graphprune.integrations.olive"  # not __name__: it is __main__ under python -m
PASS_NAMES = ("GraphprunePrune", "GraphpruneFold", "GraphprunePipeline")
PRUNE_PASS = "prune-channels"
CLEANUP = ("dead-channels", "dce")  # run after prune-channels, as `graphprune run` users write it
_TYPES = {"float": float, "int": int, "bool": bool, "str": str}
# prune-channels options that need Python objects (feed dicts, a report): not Olive options
_NOT_OPTIONS = {"replay", "calibration", "repair"}
_HELP = {
    "ratio": "fraction of each prunable group's channels to remove, in [0, 1)",
    "importance": "channel importance: l1 or l2 norm over every parameter slice of a channel",
    "global_ranking": "rank channels across groups instead of within each group",
    "round_to": "keep a multiple of this many channels per group",
    "keep": "regex: groups touching a node or tensor whose name matches are not pruned",
    "exact": "prune only groups the oracle checks exactly (keep LayerNorm/RMSNorm-normalised ones)",
    "max_group_ratio": "with global ranking or a budget, the largest fraction any one group may lose",
    "allocation": "how global ranking and budgets compare groups: normalised (score over group mean) or cost "
                  "(squared removal error per parameter removed, per MAC under target_macs)",
    "target_macs": "instead of ratio (when > 0): keep at most this fraction of the MACs",
    "target_params": "instead of ratio (when > 0): keep at most this fraction of the parameters",
}


def prune_options() -> dict[str, tuple[type, Any]]:
    """``name -> (type, default)`` of the ``prune-channels`` options Olive can set."""
    import graphprune.passes  # noqa: F401  registers the built-in passes
    from graphprune.pipeline import PASSES

    out = {}
    for f in dataclasses.fields(PASSES[PRUNE_PASS]):
        kind = _TYPES.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
        if f.init and kind is not None and f.name not in _NOT_OPTIONS and f.default is not dataclasses.MISSING:
            out[f.name] = (kind, f.default)
    return out


def _common_config() -> dict[str, PassConfigParam]:
    config = {
        "verify": PassConfigParam(type_=bool, default_value=True,
                                  description="check the result in onnxruntime (the pruning oracle, or the "
                                              "input model for lossless passes); a failure fails the pass"),
        "input_shapes": PassConfigParam(type_=dict, default_value=None,
                                        description="sizes of inputs with dynamic axes, {name: [dims]} "
                                                    "(as --input-shape); verification and MACs use them"),
    }
    config.update(get_external_data_config())
    return config


def _input_shapes(config) -> dict | None:
    shapes = getattr(config, "input_shapes", None)
    return {k: tuple(int(d) for d in v) for k, v in shapes.items()} if shapes else None


class _GraphpruneOlivePass(Pass):
    """Shared body: run a graphprune pipeline on the input ONNX model and save the result."""

    def _pipeline(self, config):
        raise NotImplementedError

    def _run_for_config(self, model: ONNXModelHandler, config: type[BasePassConfig],
                        output_model_path: str) -> ONNXModelHandler:
        from graphprune import api

        if not isinstance(model, ONNXModelHandler):
            raise ValueError(f"{type(self).__name__} takes an ONNX model, not {type(model).__name__}")
        source = Path(model.model_path)
        proto, result = api.run_pipeline(source, self._pipeline(config), verify=config.verify,
                                         input_shapes=_input_shapes(config))
        output_model_path = resolve_onnx_path(output_model_path, source.name)
        out = model_proto_to_olive_model(proto, output_model_path, config)
        checks = {r.name: r.verification.status for r in [result] + result.flat() if r.verification}
        summary = {"pass": type(self).__name__, "nodes": list(result.nodes), "params": list(result.params),
                   "macs": list(result.macs), "verification": checks if config.verify else "skipped"}
        attributes = dict(model.model_attributes or {})
        attributes.setdefault("graphprune", []).append(summary)
        out.model_attributes = attributes
        return out


class GraphprunePrune(_GraphpruneOlivePass):
    """Structured pruning (graphprune ``prune-channels``, then dead-channel cleanup), oracle-verified."""

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        config = {name: PassConfigParam(type_=kind, default_value=default,
                                        description=_HELP.get(name, f"prune-channels option {name}"))
                  for name, (kind, default) in prune_options().items()}
        config.update(_common_config())
        return config

    def _pipeline(self, config):
        from graphprune.pipeline import build_pipeline

        options = {name: getattr(config, name) for name in prune_options()}
        return build_pipeline([(PRUNE_PASS, options)] + [(name, {}) for name in CLEANUP])


class GraphpruneFold(_GraphpruneOlivePass):
    """graphprune's default lossless pipeline (``graphprune fold``), checked end to end."""

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        return _common_config()

    def _pipeline(self, config):
        import graphprune.passes as builtin
        from graphprune.pipeline import build_pipeline

        return build_pipeline([(n, {}) for n in builtin.DEFAULT_FOLD if n in builtin.PASSES], fixed_point=True)


class GraphprunePipeline(_GraphpruneOlivePass):
    """Any graphprune pipeline: a spec as ``graphprune run --pipeline`` takes (or a TOML path)."""

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        config = {"pipeline": PassConfigParam(
            type_=str, required=True,
            description="comma list of passes with options, e.g. 'fold-constants,prune-channels:ratio=0.5,dce', "
                        "or a .toml file (see `graphprune passes`)")}
        config.update(_common_config())
        return config

    def _pipeline(self, config):
        from graphprune.pipeline import build_pipeline

        return build_pipeline(config.pipeline)


def package_config() -> dict:
    """Olive's default package config with the graphprune passes added (for ``olive.workflows.run``
    and ``olive run --package-config``): a workflow names them by type, e.g. ``"GraphprunePrune"``."""
    from olive.package_config import OlivePackageConfig

    with open(OlivePackageConfig.get_default_config_path()) as f:
        data = json.load(f)
    data = copy.deepcopy(data)
    for name in PASS_NAMES:
        data["passes"][name] = {"module_path": f"{MODULE}.{name}", "supported_providers": ["*"],
                                "supported_accelerators": ["*"], "supported_precisions": ["*"],
                                "supported_algorithms": [], "supported_quantization_encodings": []}
    return data


def write_package_config(path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(package_config(), indent=1))
    return path


def run_workflow(config: dict | str | Path, **kwargs):
    """``olive.workflows.run`` with the graphprune passes registered."""
    from olive.workflows import run

    return run(config, package_config=package_config(), **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graphprune.integrations.olive",
                                     description="Olive package config with the graphprune passes registered.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("package-config", help="write Olive's package config plus the graphprune passes")
    p.add_argument("-o", "--output", required=True, help="JSON path (give it to `olive run --package-config`)")
    args = parser.parse_args(argv)
    print(f"wrote {write_package_config(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
