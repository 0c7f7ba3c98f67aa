"""Passes and pipelines: the one object used from Python, the CLI and toolchains.

A :class:`Pass` changes a :class:`~graphprune.ir.Graph` in place and returns a
:class:`PassResult` that says whether anything changed and what: nodes,
parameters and MACs before and after, time, and pass-specific details
(what was folded, what was left alone and why). A :class:`Pipeline` is an
ordered list of passes, optionally repeated to a fixed point, and is itself
a pass, so pipelines nest.

With ``verify=True`` every pass that modified the graph is checked in
onnxruntime right away: lossless passes must reproduce their input, the
pruning pass must reproduce its oracle. A failure raises
``VerificationError`` naming the pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import ClassVar

from .emit.onnx import to_onnx
from .errors import InputError, VerificationError
from .frontends.onnx import refresh_shapes
from .ir import Graph
from .metrics import total_macs
from .progress import step
from .symbolic import expression
from .verify import Verification, compare


@dataclass
class PassResult:
    name: str
    modified: bool
    nodes: tuple[int, int]
    params: tuple[int, int]
    macs: tuple[int, int]
    seconds: float
    details: dict = field(default_factory=dict)
    verification: Verification | None = None
    children: list["PassResult"] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"pass": self.name, "modified": self.modified, "nodes": list(self.nodes),
               "params": list(self.params), "macs": list(self.macs),
               "seconds": round(self.seconds, 4), "details": self.details}
        if self.verification is not None:
            out["verification"] = self.verification.to_dict()
        if self.children:
            out["passes"] = [c.to_dict() for c in self.children]
        return out

    def flat(self) -> list["PassResult"]:
        """This result's leaf passes in order (a pipeline's rows for a table)."""
        return [leaf for c in self.children for leaf in c.flat()] if self.children else [self]


def _shapes_known(graph: Graph) -> bool:
    """Every node output has a shape in terms of the inputs' own sizes, so re-inference
    would learn nothing new. A size inference had to invent (``unk__3``, a Pad's
    ``Pad_12_o0__d1``) may become known once a pass folded what it depends on."""
    tensors = graph.tensors
    inputs = {d for name in graph.inputs for d in (graph.shape(name) or ()) if isinstance(d, str)}
    settled: dict = {}

    def known(d) -> bool:
        if isinstance(d, int):
            return True
        if d not in settled:
            expr = expression(d) if isinstance(d, str) else None
            settled[d] = expr is not None and {s.name for s in expr.free_symbols} <= inputs
        return settled[d]

    for n in graph.nodes:
        for o in n.outputs:
            if not o or o in graph.constants:
                continue
            info = tensors.get(o)
            if info is None or info.shape is None or not all(known(d) for d in info.shape):
                return False
    return True


def _measure(graph: Graph) -> tuple[int, int, int]:
    return len(graph.nodes), graph.param_count(), total_macs(graph)


@dataclass
class Pass:
    """Base of all passes. Subclasses set ``name``/``summary`` and implement ``apply``.

    ``apply(graph)`` changes the graph in place and returns a details dict
    whose ``"changed"`` entry counts the edits (0 means unmodified). Options
    are dataclass fields, so ``Pass.from_options({"ratio": "0.5"})`` and the
    CLI spec ``name:ratio=0.5`` both work.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    lossless: ClassVar[bool] = True

    def apply(self, graph: Graph) -> dict:
        raise NotImplementedError

    def check(self, before, after, input_shapes: dict | None = None) -> Verification:
        """Lossless passes must reproduce their input; override for lossy ones."""
        return compare(before, after, input_shapes=input_shapes)

    def __call__(self, graph: Graph, verify: bool = False, measured: tuple | None = None) -> PassResult:
        """Run the pass (and its check); ``measured``: the graph's (nodes, params, MACs) when the
        caller already knows them (the previous pass's result), as counting MACs walks every node."""
        before_proto = to_onnx(graph, infer=False) if verify else None
        nodes0, params0, macs0 = measured or _measure(graph)
        start = time.perf_counter()
        with step(self.name):
            details = self.apply(graph) or {}
        graph.release_weights()
        modified = bool(details.get("changed", 0))
        if modified and not (self.lossless and _shapes_known(graph)):
            with step("shape inference"):
                refresh_shapes(graph)  # a lossless pass keeps every existing tensor's shape
        seconds = time.perf_counter() - start
        nodes1, params1, macs1 = _measure(graph) if modified else (nodes0, params0, macs0)
        verification = None
        if verify and modified:
            with step(f"verification ({self.name})"):
                verification = self.check(before_proto, to_onnx(graph, infer=False), graph.input_shapes)
            if not verification.ok:
                raise VerificationError(f"pass {self.name}: {verification.message}", verification)
        return PassResult(self.name, modified, (nodes0, nodes1), (params0, params1),
                          (macs0, macs1), seconds, details, verification)

    @classmethod
    def from_options(cls, options: dict) -> "Pass":
        known = {f.name: f for f in fields(cls) if f.init}
        kwargs = {}
        for key, value in options.items():
            key = key.replace("-", "_")
            if key not in known:
                raise InputError(f"pass {cls.name}: unknown option '{key}' "
                                 f"(options: {', '.join(known) or 'none'})")
            kwargs[key] = _coerce(value, known[key].type, f"{cls.name}:{key}")
        return cls(**kwargs)


def _coerce(value, annotation, where: str):
    if not isinstance(value, str):
        return value
    kind = str(annotation)
    try:
        if "bool" in kind:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if "float" in kind:
            return float(value)
        if "int" in kind:
            return int(value)
    except ValueError:
        raise InputError(f"option {where}: cannot read '{value}' as {kind}") from None
    return value


class Pipeline(Pass):
    """An ordered list of passes; with ``fixed_point`` it repeats until nothing changes."""

    name = "pipeline"
    summary = "run passes in order"

    def __init__(self, passes: list[Pass], fixed_point: bool = False, max_iterations: int = 8):
        self.passes = list(passes)
        self.fixed_point = fixed_point
        self.max_iterations = max_iterations

    @property
    def lossless(self) -> bool:  # type: ignore[override]
        return all(p.lossless for p in self.passes)

    def __call__(self, graph: Graph, verify: bool = False, measured: tuple | None = None) -> PassResult:
        nodes0, params0, macs0 = current = measured or _measure(graph)
        start = time.perf_counter()
        children: list[PassResult] = []
        for _ in range(self.max_iterations if self.fixed_point else 1):
            round_results = []
            for p in self.passes:
                round_results.append(p(graph, verify=verify, measured=current))
                last = round_results[-1]
                current = (last.nodes[1], last.params[1], last.macs[1])
            children.extend(round_results)
            if not any(r.modified for r in round_results):
                break
        modified = any(c.modified for c in children)
        nodes1, params1, macs1 = current
        return PassResult(self.name, modified, (nodes0, nodes1), (params0, params1), (macs0, macs1),
                          time.perf_counter() - start, {}, None, children)

    def __repr__(self) -> str:
        return f"Pipeline([{', '.join(p.name for p in self.passes)}], fixed_point={self.fixed_point})"


PASSES: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    """Make a pass available by name to ``build_pipeline`` and the CLI."""
    PASSES[cls.name] = cls
    return cls


def parse_spec(spec: str) -> tuple[list[tuple[str, dict]], bool]:
    """Read a pipeline spec: ``name[:key=value[:key=value]],...`` or a TOML file.

    TOML form::

        fixed_point = true
        [[pass]]
        name = "prune-channels"
        ratio = 0.5

    Returns the (name, options) list and the fixed-point flag.
    """
    if spec.endswith(".toml"):
        import tomllib
        from pathlib import Path

        path = Path(spec)
        if not path.is_file():
            raise InputError(f"{spec}: no such pipeline file")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{spec}: invalid TOML ({exc})") from exc
        steps = []
        for i, entry in enumerate(data.get("pass", [])):
            entry = dict(entry)
            if "name" not in entry:
                raise InputError(f"{spec}: [[pass]] number {i + 1} has no name")
            steps.append((entry.pop("name"), entry))
        return steps, bool(data.get("fixed_point", False))
    steps = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, *opts = item.split(":")
        options = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep:
                raise InputError(f"pipeline spec '{item}': option '{opt}' is not key=value")
            options[key.strip()] = value.strip()
        steps.append((name.strip(), options))
    return steps, False


def build_pipeline(spec, fixed_point: bool | None = None) -> Pipeline:
    """A Pipeline from a spec string, TOML path, or list of (name, options)."""
    import graphprune.passes  # noqa: F401  registers the built-in passes

    steps, spec_fixed = parse_spec(spec) if isinstance(spec, str) else (list(spec), False)
    if not steps:
        raise InputError("empty pipeline: name at least one pass (see `graphprune passes`)")
    passes = []
    for name, options in steps:
        if name not in PASSES:
            raise InputError(f"unknown pass '{name}' (known: {', '.join(sorted(PASSES))})")
        passes.append(PASSES[name].from_options(options))
    return Pipeline(passes, fixed_point=spec_fixed if fixed_point is None else fixed_point)


def pass_options(cls: type[Pass]) -> list[str]:
    """``name=default`` of every option of a pass (for help output)."""
    return [f"{f.name.replace('_', '-')}={f.default}" for f in fields(cls) if f.init]
