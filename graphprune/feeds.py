"""What the oracle feeds a model: realistic shapes and valid, varied values.

A check is only as good as its inputs. Exports with dynamic axes leave the
sizes to us, and a model may not run at arbitrary ones (a detector's
upsampled maps must line up, so H and W must be multiples of its stride).
Integer inputs are usually indices: token ids must stay below the embedding's
row count, or the model reads out of range (onnxruntime raises) or the check
only ever sees token 0.

* **Shapes.** Every symbolic input dim gets a role from its axis and name
  (batch, sequence, spatial, other) and a list of realistic sizes for that
  role; assignment *k* takes the *k*-th size of every role. Sizes the user
  declared (``--input-shape NAME=1x3x640x640``) are fixed in all of them.
  :func:`assignments` lists them in the order the oracle tries them.
* **Values.** Each input in its own dtype. Floats are standard normal; an
  integer input that reaches a ``Gather`` as indices (through casts and
  reshapes) is uniform below the smallest row count it indexes; an input named
  like a mask is all ones; an input a consumer constrains (Resize scales and
  sizes, Split sizes, axes, NMS boxes and thresholds, a divisor, ...) takes a
  value valid for it (:mod:`.feed_values`); integers that only reach
  arithmetic are small and varied; other integers are zeros, other booleans
  False.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx

from .errors import InputError

ROLE_SIZES = {
    "batch": (1, 2, 2, 1),
    "sequence": (16, 32, 64, 128, 8),
    "spatial": (224, 320, 256, 640, 128, 64, 32),
    "other": (16, 8, 32, 4, 64, 2, 1),
}
_SEQUENCE = re.compile(r"seq|len|token|time|frame|past|total|step", re.I)
_SPATIAL = re.compile(r"height|width|^h$|^w$|^h_|^w_|_h$|_w$", re.I)
_BATCH = re.compile(r"batch|^n$|^b$|^bs$", re.I)
_MASK = re.compile(r"mask", re.I)
INDEX_PATH_OPS = ("Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand", "Slice")


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=1x3x640x640`` → ``("NAME", (1, 3, 640, 640))``; errors say what is expected."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x")) if dims else ()
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d < 0 for d in shape):
        raise InputError(f"--input-shape '{text}': expected NAME=D1xD2x... with non-negative integers "
                         "(e.g. input_ids=1x128 or images=1x3x640x640)")
    return name, shape


def _role(input_name: str, axis: int, rank: int, symbol: str, integer: bool) -> str:
    if _BATCH.search(symbol) or (axis == 0 and not _SEQUENCE.search(symbol) and rank > 1):
        return "batch"
    if _SPATIAL.search(symbol) or (not integer and rank == 4 and axis in (2, 3)):
        return "spatial"
    if _SEQUENCE.search(symbol) or (integer and rank == 2 and axis == 1) or (rank == 3 and axis == 1):
        return "sequence"
    return "other"


@dataclass
class InputSpec:
    name: str
    dims: list  # int or symbol key
    elem_type: int


@dataclass
class FeedPlan:
    """The inputs of a model and how to make values for them."""

    inputs: list[InputSpec]
    roles: dict[str, str] = field(default_factory=dict)  # symbol -> role
    declared: dict[str, tuple[int, ...]] = field(default_factory=dict)
    index_rows: dict[str, int] = field(default_factory=dict)  # integer input -> rows it indexes
    view: object = None  # feed_values.ModelView: consumers' constraints on values
    observed: dict[str, tuple[int, int]] = field(default_factory=dict)  # integer input -> calibration range

    @property
    def symbolic(self) -> bool:
        return any(not isinstance(d, int) for i in self.inputs for d in i.dims)

    def assignments(self) -> list[dict[str, tuple[int, ...]]]:
        """Concrete input shapes to try, most realistic first, without repeats."""
        fixed: dict[str, int] = {}
        for spec in self.inputs:
            shape = self.declared.get(spec.name)
            if shape is not None:
                fixed.update({d: s for d, s in zip(spec.dims, shape) if not isinstance(d, int)})
        longest = max((len(s) for s in ROLE_SIZES.values()), default=1)
        candidates = [{sym: fixed.get(sym, ROLE_SIZES[role][min(k, len(ROLE_SIZES[role]) - 1)])
                       for sym, role in self.roles.items()} for k in range(longest)]
        candidates += [{sym: fixed.get(sym, v) for sym in self.roles} for v in (2, 1)]
        out, seen = [], set()
        for values in candidates:
            shapes = {}
            for spec in self.inputs:
                declared = self.declared.get(spec.name)
                shapes[spec.name] = tuple(declared) if declared is not None else tuple(
                    d if isinstance(d, int) else values[d] for d in spec.dims)
            key = tuple(sorted(shapes.items()))
            if key not in seen:
                seen.add(key)
                out.append(shapes)
        return out

    def symbol_values(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
        """Symbol → size in one assignment (for metrics at that shape)."""
        values = {}
        for spec in self.inputs:
            for d, s in zip(spec.dims, shapes.get(spec.name, ())):
                if isinstance(d, str):
                    values[d] = int(s)
        return values

    def values(self, shapes: dict[str, tuple[int, ...]], seed: int, safe: bool = False) -> dict[str, np.ndarray]:
        """One draw of inputs at ``shapes``. ``safe``: integers no rule constrains are zeros
        (the fallback when the varied draw makes the model fail)."""
        _check_size(self.inputs, shapes)
        rng = np.random.default_rng(seed)
        if self.view is not None:
            self.view.shapes = {k: tuple(v) for k, v in shapes.items()}
        feeds = {}
        for spec in self.inputs:
            shape = tuple(shapes[spec.name])
            seen = self.observed.get(spec.name)
            if seen is not None:  # the values real inputs take (calibration data)
                feeds[spec.name] = rng.integers(seen[0], seen[1] + 1, size=shape).astype(_np_dtype(spec.elem_type))
                continue
            feeds[spec.name] = _value(spec, shape, self.index_rows.get(spec.name), rng, self.view, safe)
        return feeds


FEED_LIMIT_BYTES = 1 << 31  # random inputs of one draw; beyond this the check cannot run here


def _check_size(inputs: list[InputSpec], shapes: dict) -> None:
    total = 0
    for spec in inputs:
        shape = shapes[spec.name]
        size = int(np.prod([int(d) for d in shape], dtype=object)) * max(_np_dtype(spec.elem_type).itemsize, 1)
        total += size
        if total > FEED_LIMIT_BYTES:
            raise InputError(f"input '{spec.name}' at shape {'x'.join(map(str, shape))} needs {size / 1e9:.3g} GB "
                             "of test values, too large to verify here; give a smaller size with --input-shape "
                             "NAME=D1xD2..., or skip the check with --no-verify")


def _value(spec: InputSpec, shape, rows: int | None, rng, view=None, safe: bool = False) -> np.ndarray:
    from .feed_values import arithmetic_only, constrained_value

    dtype = _np_dtype(spec.elem_type)
    constrained = None
    if view is not None and not rows:
        constrained = constrained_value(spec.name, view, shape, dtype, rng)
    if constrained is not None:
        return constrained
    if dtype.kind == "f" or dtype.name == "bfloat16":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind == "b":
        return np.full(shape, bool(_MASK.search(spec.name)))
    if _MASK.search(spec.name):
        return np.ones(shape, dtype=dtype)
    if rows:
        high = min(rows, np.iinfo(dtype).max if dtype.kind in "iu" else rows)
        return rng.integers(0, max(high, 1), size=shape).astype(dtype)
    if dtype.kind in "iu" and not safe and view is not None and arithmetic_only(spec.name, view):
        return rng.integers(0, 5, size=shape).astype(dtype)  # varied, valid for any arithmetic
    if dtype.kind in "OSU":
        return np.full(shape, "a", dtype=object)
    return np.zeros(shape, dtype=dtype)


def _np_dtype(elem_type: int) -> np.dtype:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return np.dtype(np.float32)


def _index_rows(model: onnx.ModelProto, names: set[str]) -> dict[str, int]:
    """Integer inputs used as ``Gather`` indices: the smallest row count they index."""
    g = model.graph
    dims = {t.name: list(t.dims) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            dims[n.output[0]] = list(n.attribute[0].t.dims)
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for t in n.input:
            users.setdefault(t, []).append(n)
    rows: dict[str, int] = {}
    for name in names:
        frontier, seen = [name], {name}
        while frontier:
            t = frontier.pop()
            for n in users.get(t, []):
                if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == t and n.input[0] in dims:
                    axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
                    shape = dims[n.input[0]]
                    if shape and -len(shape) <= axis < len(shape):
                        rows[name] = min(rows.get(name, shape[axis]), shape[axis])
                elif n.op_type in INDEX_PATH_OPS and n.input and n.input[0] == t:
                    for o in n.output:
                        if o and o not in seen:
                            seen.add(o)
                            frontier.append(o)
    return rows


def observed_ranges(examples, names: set[str]) -> dict[str, tuple[int, int]]:
    """(min, max) of each integer input over example feeds (calibration batches)."""
    ranges: dict[str, tuple[int, int]] = {}
    for batch in examples or []:
        for name in names & set(batch):
            values = np.asarray(batch[name])
            if values.size and values.dtype.kind in "iu":
                lo, hi = int(values.min()), int(values.max())
                old = ranges.get(name, (lo, hi))
                ranges[name] = (min(lo, old[0]), max(hi, old[1]))
    return ranges


def feed_plan(model: onnx.ModelProto, declared: dict[str, tuple[int, ...]] | None = None,
              examples: list[dict] | None = None) -> FeedPlan:
    """Read a model's inputs: symbols with roles, declared shapes, index ranges, and the range
    each integer input takes in ``examples`` (calibration feeds), which then bounds its values."""
    g = model.graph
    initializers = {t.name for t in g.initializer}
    declared = dict(declared or {})
    specs, roles = [], {}
    for vi in g.input:
        if vi.name in initializers:
            continue
        tt = vi.type.tensor_type
        integer = _np_dtype(tt.elem_type).kind in "iub"
        dims = []
        shape_dims = list(tt.shape.dim) if tt.HasField("shape") else []
        for axis, d in enumerate(shape_dims):
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
                continue
            symbol = d.dim_param or f"{vi.name}:{axis}"
            dims.append(symbol)
            roles.setdefault(symbol, _role(vi.name, axis, len(shape_dims), symbol, integer))
        specs.append(InputSpec(vi.name, dims, tt.elem_type))
    known = {s.name for s in specs}
    for name, shape in declared.items():
        if name not in known:
            raise InputError(f"--input-shape names '{name}', which is not an input of the model "
                             f"(inputs: {', '.join(sorted(known)) or 'none'})")
        spec = next(s for s in specs if s.name == name)
        if len(shape) != len(spec.dims) or any(isinstance(d, int) and d != s for d, s in zip(spec.dims, shape)):
            raise InputError(f"--input-shape {name}={'x'.join(map(str, shape))} does not fit the model's "
                             f"input shape {tuple(spec.dims)}")
    integers = {s.name for s in specs if _np_dtype(s.elem_type).kind in "iu"}
    from .feed_values import ModelView

    return FeedPlan(specs, roles, declared, _index_rows(model, integers), ModelView(model),
                    observed_ranges(examples, integers))
