"""``inspect --html`` / ``prune --html``: one self-contained page about a model's channel groups.

The page has no external assets (inline CSS, the picture of
:mod:`graphprune.plots` embedded as a base64 PNG when matplotlib is
installed) and holds:

* the totals (params, MACs; before and after for a prune, with the
  verification verdict);
* the prunable groups: channels, kept and removed, the layers whose
  parameters the group slices, the parameters and activation tensors it
  couples (folded, they can be long: a residual stream couples every block);
* the pinned groups with parameters and *why* each is pinned;
* params and MACs per layer (before and after).

All text is HTML-escaped. The data is an inspect dict or a prune report;
:func:`group_structure` adds what the report does not keep (the layers and
activation tensors of each group) from the channel analysis when the caller
has it.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .errors import InputError
from .plots import fmt, render_png, write_atomic

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#1a202c;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #e2e8f0}
table{border-collapse:collapse;width:100%;margin:.5em 0}table.summary{width:auto;min-width:40%}
th,td{border-bottom:1px solid #edf2f7;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f7fafc;position:sticky;top:0}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font-size:12px;color:#2d3748}.muted{color:#718096}
details summary{cursor:pointer;color:#2b6cb0}
.bar{background:#e2e8f0;height:10px;width:64px;display:inline-block;vertical-align:middle;margin-left:4px}
td.k{white-space:nowrap}
.bar span{background:#2b6cb0;height:10px;display:block}
.pin{color:#9b2c2c}img{max-width:100%;border:1px solid #e2e8f0}
"""


def group_structure(analysis) -> dict[int, dict]:
    """Per group id: ``layers`` (nodes whose parameters it slices, in graph order) and
    ``tensors`` (the activation axes it couples)."""
    table, graph = analysis.table, analysis.graph
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    out = {}
    for g in analysis.groups:
        layers: set[str] = set()
        tensors = []
        for d in g.dims:
            if table.is_virtual(d):
                continue
            if table.keys[d][0] in graph.constants:
                layers |= table.touched_by.get(d, set())
            else:
                tensors.append(table.label(d))
        out[g.id] = {"layers": sorted(layers, key=lambda n: order.get(n, len(order))), "tensors": tensors}
    return out


def with_structure(groups: list[dict], structure: dict[int, dict] | None) -> list[dict]:
    """Group entries with their ``layers`` and ``tensors`` (when the structure is known)."""
    if not structure:
        return groups
    return [dict(g, **structure.get(g["id"], {})) for g in groups]


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _names(items: list[str], shown: int = 4) -> str:
    """The first ``shown`` names, the rest folded in a ``<details>``."""
    if not items:
        return '<span class="muted">-</span>'
    head = ", ".join(f"<code>{_e(x)}</code>" for x in items[:shown])
    if len(items) <= shown:
        return head
    rest = ", ".join(f"<code>{_e(x)}</code>" for x in items[shown:])
    return f"{head} <details><summary>{len(items) - shown} more</summary>{rest}</details>"


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), css: str = "") -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    def cell(i: int, c: str) -> str:
        if i in numeric:
            return f'<td class="n">{c}</td>'
        return f'<td class="k">{c}</td>' if 'class="bar"' in c else f"<td>{c}</td>"

    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _bar(fraction: float) -> str:
    return f'<span class="bar"><span style="width:{max(0.0, min(1.0, fraction)) * 100:.0f}%"></span></span>'


def _summary(data: dict, pruned: bool) -> str:
    if not pruned:
        at = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in (data.get("macs_at") or {}).items())
        return _table(["", "value"], [["params", fmt(data["params"])],
                                      ["MACs", fmt(data["macs"]) + (f' <span class="muted">at {_e(at)}</span>'
                                                                    if at else "")]], {1}, "summary")
    rows = []
    for key in ("params", "macs"):
        b, a = data[key]
        rows.append([key if key == "params" else "MACs", fmt(b), fmt(a), f"{a / b:.3f}" if b else "-"])
    groups = data.get("groups", [])
    total = sum(g["channels"] for g in groups)
    kept = total - sum(g.get("removed", 0) for g in groups)
    rows.append(["channels in prunable groups", str(total), str(kept), f"{kept / total:.3f}" if total else "-"])
    v = data.get("verification") or {}
    detail = (f" (max relative error {v['max_relative_error']:.2e})"
              if v.get("status") == "exact" and v.get("max_relative_error") is not None else "")
    return (_table(["", "before", "after", "ratio"], rows, {1, 2, 3}, "summary")
            + f"<p>verification: <b>{_e(v.get('status', '-'))}</b>{_e(detail)}</p>")


def _groups_section(groups: list[dict], pruned: bool) -> str:
    if not groups:
        return "<p class='muted'>no prunable groups</p>"
    rows = []
    for g in groups:
        channels, removed = g["channels"], g.get("removed", 0)
        row = [str(g["id"]), str(channels)]
        if pruned:
            kept = channels - removed
            row += [f"{kept}{_bar(kept / channels if channels else 0)}", str(removed)]
        note = f'<div class="muted">approximate: {_e(g["approximate"])}</div>' if g.get("approximate") else ""
        row += [_names(g.get("layers", [])), _names(g.get("parameters", [])) + note,
                _names(g.get("tensors", []), 2)]
        rows.append(row)
    head = ["group", "channels"] + (["kept", "removed"] if pruned else []) + \
        ["layers it slices", "parameters it couples", "activation tensors"]
    return _table(head, rows, {0, 1, 3} if pruned else {0, 1})


def _pinned_section(pinned: list[dict]) -> str:
    if not pinned:
        return "<p class='muted'>no pinned groups with parameters</p>"
    rows = [[str(g["id"]), str(g["channels"]), f'<span class="pin">{_e(g.get("pinned", ""))}</span>',
             _names(g.get("layers", [])), _names(g.get("parameters", [])), _names(g.get("tensors", []), 2)]
            for g in pinned]
    return _table(["group", "channels", "why it is pinned", "layers", "parameters", "activation tensors"], rows,
                  {0, 1})


def _layers_section(layers: list[dict], after: list[dict] | None) -> str:
    if after is None:
        rows = [[f"<code>{_e(r['node'])}</code>", _e(r["op"]), fmt(r["params"]), fmt(r["macs"])] for r in layers]
        return _table(["node", "op", "params", "MACs"], rows, {2, 3})
    later = {r["node"]: r for r in after}
    rows = []
    for r in layers:
        a = later.get(r["node"])
        ratio = f"{a['macs'] / r['macs']:.3f}" if a and r["macs"] else ("removed" if not a else "-")
        rows.append([f"<code>{_e(r['node'])}</code>", _e(r["op"]), fmt(r["params"]),
                     fmt(a["params"]) if a else "0", fmt(r["macs"]), fmt(a["macs"]) if a else "0", ratio])
    return _table(["node", "op", "params before", "params after", "MACs before", "MACs after", "MACs ratio"],
                  rows, {2, 3, 4, 5, 6})


def render_html(data: dict, layers_after: list[dict] | None = None, structure: dict[int, dict] | None = None,
                title: str = "", picture: bool = True) -> str:
    """The page as a string. ``data``: an inspect dict, or a prune report with ``layers`` (the
    original model's layer table) and then ``layers_after``; ``structure``: from
    :func:`group_structure`; ``picture``: embed the PNG when matplotlib is installed."""
    pruned = "verification" in data
    groups = with_structure(data.get("groups", []), structure)
    pinned = with_structure(data.get("pinned", []), structure)
    img = ""
    if picture:
        try:
            png = render_png(dict(data, groups=groups, pinned=pinned), layers_after if pruned else None, title)
            img = (f'<img alt="channels per group and MACs per layer" '
                   f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')
        except InputError:  # no matplotlib: the tables say the same
            img = "<p class='muted'>(install graphprune[plot] for the picture)</p>"
    settings = data.get("settings")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(title or 'graphprune')}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title or 'graphprune')}</h1>",
        f"<p class='muted'>{'prune' if pruned else 'inspect'} report by graphprune"
        + (f"; settings: <code>{_e(', '.join(f'{k}={v}' for k, v in settings.items()))}</code>" if settings
           else "") + "</p>",
        _summary(data, pruned), img,
        f"<h2>Prunable groups ({len(groups)})</h2>",
        "<p class='muted'>A group is a set of channels that can only be removed together: every layer "
        "listed is sliced when one of its channels goes.</p>",
        _groups_section(groups, pruned),
        f"<h2>Pinned groups with parameters ({len(pinned)})</h2>",
        _pinned_section(pinned),
        f"<h2>Layers ({sum(1 for r in data.get('layers', []))})</h2>",
        _layers_section(data.get("layers", []), layers_after if pruned else None),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def save_html(path, data: dict, layers_after: list[dict] | None = None, structure: dict[int, dict] | None = None,
              title: str = "", protect: tuple = ()) -> Path:
    """Render and write the page to ``path`` atomically (never over the input model)."""
    if Path(path).suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{path}: --html writes a web page; give a path ending in .html")
    return write_atomic(path, render_html(data, layers_after, structure, title).encode("utf-8"), protect)

