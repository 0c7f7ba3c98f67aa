"""Per-layer pictures (``inspect --plot``, ``prune --plot``): channels per group, MACs per layer.

Two horizontal bar charts side by side, in graph order:

* **channels per group**: the original size of every prunable group, the kept
  part drawn over it (``kept/original`` at the end of each bar); on
  ``inspect`` the pinned groups with parameters are drawn in grey with their
  size;
* **MACs per layer**: every contraction's MACs before, and after pruning.

Long models are cut to the ``MAX_ROWS`` largest rows (by original channels,
by MACs before) and the title says how many are shown; ``--html`` and
``--report`` carry the full lists. matplotlib is imported lazily
(``pip install graphprune[plot]``); the file is written atomically and the
Agg backend is used, so no display is needed.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from .errors import InputError
from .units import short

MAX_ROWS = 40
LABEL_CHARS = 44
KEPT, REMOVED, PINNED, BEFORE, AFTER = "#2b6cb0", "#e2e8f0", "#a0aec0", "#cbd5e0", "#dd6b20"


def require_matplotlib():
    """The pyplot module (Agg backend), or an ``InputError`` (exit 2) naming the fix."""
    try:
        import matplotlib
    except ImportError as exc:
        raise InputError(f"--plot needs matplotlib, which is not installed: pip install 'graphprune[plot]' "
                         f"({exc})") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def shorten_label(text: str, limit: int = LABEL_CHARS) -> str:
    """``text`` cut in the middle to ``limit`` characters (the ends of names say the most)."""
    text = text.strip("/")
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def fmt(n: float) -> str:
    return short(n, ".3g")


def _layer_name(node: str, op: str | None = None) -> str:
    """A node name without its leading ``/``, its last segment when it only repeats the op (or,
    with no op given, looks like one: ``/encoder/layer.0/query/MatMul`` → ``encoder/layer.0/query``),
    and scope segments the next one repeats (``layer1/layer1.0/conv1`` → ``layer1.0/conv1``)."""
    parts = node.strip("/").split("/")
    if len(parts) > 1 and (parts[-1] == op or (op is None and re.fullmatch(r"[A-Z][A-Za-z]+", parts[-1]))):
        parts = parts[:-1]
    # torch scopes repeat the module path: features/features.2/block/block.0 -> features.2/block.0
    parts = [p for p, nxt in zip(parts, parts[1:] + [""]) if not nxt.startswith(p + ".")]
    return "/".join(parts)


GENERATED = re.compile(r"(node_)?[A-Z][A-Za-z]*_\d+|node_[a-z_]+(_\d+)?")  # dynamo's node_Conv_291, node_linear


def readable_names(graph) -> dict[str, str]:
    """Node name → a name for the picture: exporters that generate node names (the dynamo
    exporter's ``node_Conv_291``) keep the parameter names, so such a node is called after its
    weight (``layer1.0.conv1.weight`` → ``layer1.0.conv1``)."""
    out = {}
    for node in graph.nodes:
        if not GENERATED.fullmatch(node.name):
            continue
        weight = next((t for t in node.inputs[1:] if t in graph.constants and graph.constants[t].ndim >= 2
                       and re.search(r"[A-Za-z]", t) and not t.startswith(("onnx::", "_"))), None)
        if weight:
            out[node.name] = re.sub(r"\.weight$", "", weight)
    return out


def renamed(data: dict, layers_after: list[dict] | None, names: dict[str, str]) -> tuple[dict, list | None]:
    """``data`` and ``layers_after`` with node names replaced by :func:`readable_names`."""
    if not names:
        return data, layers_after

    def rows(table):
        return None if table is None else [dict(r, node=names.get(r["node"], r["node"])) for r in table]

    def groups(items):
        return [dict(g, layers=[names.get(n, n) for n in g["layers"]]) if g.get("layers") else g for g in items]

    return (dict(data, layers=rows(data.get("layers", [])), groups=groups(data.get("groups", [])),
                 pinned=groups(data.get("pinned", []))), rows(layers_after))


def compact(names: list[str], limit: int = LABEL_CHARS) -> tuple[list[str], str]:
    """``names`` without the path prefix they all share (returned too), each cut to its last
    ``limit`` characters: the end of a name is what tells layers apart."""
    split = [n.split("/") for n in names]
    prefix: list[str] = []
    if len(split) > 1:
        for parts in zip(*split):
            if len(set(parts)) != 1:
                break
            prefix.append(parts[0])
        prefix = prefix[:min(len(p) for p in split) - 1]  # keep at least one segment per name
    out = ["/".join(p[len(prefix):]) for p in split]
    return [n if len(n) <= limit else "…" + n[len(n) - limit + 1:] for n in out], "/".join(prefix)


def group_labels(groups: list[dict]) -> tuple[list[str], str]:
    """``g<id> <first layer it slices> +<more layers>`` per group (its first parameter when the
    layers are unknown), and the prefix taken off the layer names."""
    firsts, extra = [], []
    for g in groups:
        names = [_layer_name(n) for n in g.get("layers") or []] or \
            [p.replace("[axis ", "[") for p in g.get("parameters") or []]
        firsts.append(names[0] if names else "-")
        extra.append(f" +{len(names) - 1}" if len(names) > 1 else "")
    short, prefix = compact(firsts, LABEL_CHARS - 8)
    return [f"g{g['id']} {n}{m}" for g, n, m in zip(groups, short, extra)], prefix


def group_label(group: dict) -> str:
    return group_labels([group])[0][0]


def _top(rows: list, key, limit: int) -> tuple[list, int]:
    """The ``limit`` rows with the largest ``key``, in their original order; and how many there were."""
    if len(rows) <= limit:
        return rows, len(rows)
    chosen = set(sorted(range(len(rows)), key=lambda i: -key(rows[i]))[:limit])
    return [r for i, r in enumerate(rows) if i in chosen], len(rows)


def layer_rows(before: list[dict], after: list[dict] | None) -> list[dict]:
    """Contractions (layers with MACs) of ``before`` with their MACs and params after (0 when removed)."""
    later = {r["node"]: r for r in after or []}
    rows = []
    for r in before:
        if not r["macs"]:
            continue
        a = later.get(r["node"], {"macs": 0, "params": 0})
        rows.append({"node": r["node"], "op": r["op"], "macs": r["macs"], "params": r["params"],
                     "macs_after": a["macs"] if after is not None else None,
                     "params_after": a["params"] if after is not None else None})
    return rows


def plot_data(data: dict, layers_after: list[dict] | None = None) -> dict:
    """What the picture shows, from an inspect dict or a prune report (with ``layers``)."""
    pruned = "verification" in data  # a prune report (an inspect dict has none)
    groups = [dict(g, kept=g["channels"] - g.get("removed", 0)) for g in data.get("groups", [])]
    pinned = [] if pruned else list(data.get("pinned", []))
    return {"pruned": pruned, "groups": groups, "pinned": pinned,
            "layers": layer_rows(data.get("layers", []), layers_after if pruned else None),
            "params": data["params"], "macs": data["macs"]}


def render_png(data: dict, layers_after: list[dict] | None = None, title: str = "") -> bytes:
    """The picture as PNG bytes (see the module docstring for what it shows)."""
    plt = require_matplotlib()
    d = plot_data(data, layers_after)
    groups, n_groups = _top(d["groups"] + d["pinned"], lambda g: g["channels"], MAX_ROWS)
    layers, n_layers = _top(d["layers"], lambda r: r["macs"], MAX_ROWS)
    rows = max(len(groups), len(layers), 8)
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 1.6 + 0.24 * rows))
    try:
        _draw_groups(left, groups, n_groups, d["pruned"])
        _draw_layers(right, layers, n_layers, d["pruned"])
        fig.suptitle(title + ("\n" if title else "") + _totals(d), fontsize=11)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()
    finally:
        plt.close(fig)


def _totals(d: dict) -> str:
    (p0, p1), (m0, m1) = (d["params"], d["macs"]) if d["pruned"] else ((d["params"],) * 2, (d["macs"],) * 2)
    if not d["pruned"]:
        return f"params {fmt(p0)}, MACs {fmt(m0)}"
    return (f"params {fmt(p0)} → {fmt(p1)} ({p1 / p0:.2f}×), MACs {fmt(m0)} → {fmt(m1)} "
            f"({m1 / m0:.2f}×)" if p0 and m0 else f"params {fmt(p0)} → {fmt(p1)}")


def _draw_groups(ax, groups: list[dict], total: int, pruned: bool) -> None:
    ys = list(range(len(groups)))
    sizes = [g["channels"] for g in groups]
    kept = [g["kept"] if "pinned" not in g else g["channels"] for g in groups]
    colors = [PINNED if "pinned" in g else KEPT for g in groups]
    if pruned:
        ax.barh(ys, sizes, color=REMOVED, edgecolor="#a0aec0", linewidth=0.5, label="original")
        ax.barh(ys, kept, color=colors, label="kept")
    else:
        ax.barh(ys, sizes, color=colors)
    for y, g, k in zip(ys, groups, kept):
        text = f"{k}/{g['channels']}" if pruned else (f"{g['channels']} pinned" if "pinned" in g
                                                       else str(g["channels"]))
        ax.text(g["channels"], y, " " + text, va="center", fontsize=7)
    labels, prefix = group_labels(groups)
    ax.set_yticks(ys, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("channels" + (f" (the {len(groups)} largest of {total} groups)" if len(groups) < total else ""))
    ax.set_ylabel("group: the first layer it slices (+ how many more)"
                  + (f"\nlayer names under {shorten_label(prefix, 60)}/" if prefix else ""), fontsize=8)
    ax.set_title("kept vs original channels per group" if pruned else "channels per group",
                 fontsize=10, loc="left")
    if sizes:
        ax.set_xlim(0, max(sizes) * 1.18)
    if pruned and groups:
        _legend(ax)
    elif any("pinned" in g for g in groups):
        from matplotlib.patches import Patch

        _legend(ax, handles=[Patch(color=KEPT, label="prunable"), Patch(color=PINNED, label="pinned")])
    if not groups:
        ax.text(0.5, 0.5, "no prunable groups", ha="center", va="center", transform=ax.transAxes)


def _legend(ax, **kwargs) -> None:
    """Above the axes, right-aligned: never over a bar or its label."""
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False,
              borderaxespad=0.2, **kwargs)


def _draw_layers(ax, layers: list[dict], total: int, pruned: bool) -> None:
    ys = list(range(len(layers)))
    before = [r["macs"] for r in layers]
    if pruned:
        after = [r["macs_after"] for r in layers]
        ax.barh([y - 0.2 for y in ys], before, height=0.4, color=BEFORE, label="before")
        ax.barh([y + 0.2 for y in ys], after, height=0.4, color=AFTER, label="after")
        for y, b, a in zip(ys, before, after):
            ax.text(max(a, b), y, f" {a / b:.2f}" if b else "", va="center", fontsize=7)
        _legend(ax)
    else:
        ax.barh(ys, before, color=KEPT)
        for y, b in zip(ys, before):
            ax.text(b, y, " " + fmt(b), va="center", fontsize=7)
    names, prefix = compact([_layer_name(r["node"], r["op"]) for r in layers], LABEL_CHARS - 8)
    ax.set_yticks(ys, [f"{n} ({r['op']})" for n, r in zip(names, layers)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("MACs" + (f" (the {len(layers)} largest of {total} layers)" if len(layers) < total else ""))
    if prefix:
        ax.set_ylabel(f"layers under {shorten_label(prefix, 60)}/", fontsize=8)
    ax.xaxis.set_major_formatter(lambda x, _pos: fmt(x))
    ax.set_title("MACs per layer (after/before)" if pruned else "MACs per layer", fontsize=10, loc="left")
    if before:
        ax.set_xlim(0, max(before) * 1.12)
    if not layers:
        ax.text(0.5, 0.5, "no contractions", ha="center", va="center", transform=ax.transAxes)


def write_atomic(path: str | os.PathLike, payload: bytes, protect: tuple = ()) -> Path:
    """Write ``payload`` to ``path`` through a temporary file and ``os.replace``; never over a
    file in ``protect`` (the input model)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    for other in protect:
        if other is not None and path.exists() and Path(other).exists() and os.path.samefile(path, other):
            raise InputError(f"{path}: refusing to overwrite the input model")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_plot(path, data: dict, layers_after: list[dict] | None = None, title: str = "",
              protect: tuple = ()) -> Path:
    """Render and write the picture to ``path`` (PNG; see :func:`render_png`)."""
    if Path(path).suffix.lower() != ".png":
        raise InputError(f"{path}: --plot writes a PNG image; give a path ending in .png")
    return write_atomic(path, render_png(data, layers_after, title), protect)
