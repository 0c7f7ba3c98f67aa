"""``graphprune`` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 verification failed (nothing written), 2 bad input
or usage, 3 internal error (a bug: please report it with ``--debug`` output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import progress, signals
from .criteria import ACTIVATION_CRITERIA, CRITERIA, REPAIRS
from .errors import GraphpruneError, InputError, VerificationError, shorten
from .units import parse_size, short
from .bench import add_bench_flag, add_bench_parser

EXIT_OK, EXIT_VERIFY, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def _api():
    """The Python API, imported on first use so ``--help`` and usage errors start fast."""
    from . import api

    return api




def _numeric(cell) -> bool:
    text = str(cell).rstrip("KMG")
    return text.replace(".", "", 1).isdigit() or text == "-"


def print_table(rows: list[tuple], out=None) -> None:
    out = out or sys.stdout
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(str(c).rjust(w) if _numeric(c) else str(c).ljust(w)
                        for c, w in zip(row, widths)).rstrip(), file=out)
        if k == 0:
            print("  ".join("-" * w for w in widths), file=out)


def print_prune_summary(report: dict, seconds: float) -> None:
    (p0, p1), (m0, m1) = report["params"], report["macs"]
    groups = report["groups"]
    removed = sum(g["removed"] for g in groups)
    total = sum(g["channels"] for g in groups)
    print_table([
        ("", "before", "after", "ratio"),
        ("params", short(p0), short(p1), f"{p1 / p0:.3f}" if p0 else "-"),
        ("MACs", short(m0), short(m1), f"{m1 / m0:.3f}" if m0 else "-"),
        ("channels in prunable groups", total, total - removed, f"{(total - removed) / total:.3f}" if total else "-"),
    ])
    v = report["verification"]
    detail = f" (max relative error {v['max_relative_error']:.2e})" if v["status"] == "exact" else ""
    print(f"groups: {len(groups)} pruned, {len(report['pinned'])} pinned; "
          f"verification: {v['status']}{detail}; {seconds:.2f}s")
    shapes = "; ".join(", ".join(f"{k}={'x'.join(map(str, s))}" for k, s in run.items())
                       for run in v.get("shapes") or [])
    if shapes:
        regions = f" (region by region: {v['regions']} sessions of bounded size)" if v.get("regions") else ""
        print(f"verified at: {shapes}{regions}")
    if report.get("macs_at"):
        print("MACs at: " + ", ".join(f"{k}={'x'.join(map(str, s))}" for k, s in report["macs_at"].items()))
    if report.get("budget"):
        b = report["budget"]
        unmet = ", NOT met: every group is at --max-group-ratio" if b["metric"] != "latency" else \
            ", NOT met in the search: the closest measured is kept"
        print(f"budget: {b['metric']} {b['achieved']:.3f} of the original (target {b['target']:g}"
              f"{'' if b['met'] else unmet})"
              + (f"; measured at {b['measured_at']}, dense {b['dense_ms']} ms, MACs budget "
                 f"{b['target_macs']:.3f}" if b["metric"] == "latency" else ""))
    calib = report.get("calibration")
    if calib:
        errors = ", ".join(f"{k} {v:.3g}" for k, v in calib["output_error"].items())
        held = f"{calib['held_out']} held-out batches" if calib["held_out"] else "the calibration batch itself"
        repair = calib.get("repair", {})
        undone = f"; repair undone: {repair['undone']}" if repair.get("undone") else ""
        print(f"calibration: {calib['samples']} samples; output error vs the original on {held}: "
              f"{errors}{undone}")


def _save_like_input(model, src: Path, dst: Path, shard: str | None = None) -> None:
    """External data in, external data out (and always for models over 2 GB); ``shard``: the
    ``--shard-size`` text."""
    from .frontends.onnx import uses_external_data

    _api().save(model, dst, external_data=True if uses_external_data(src) or shard else None,
                shard_bytes=parse_size(shard) if shard else None)


def _same_file(a: Path, b: Path) -> bool:
    return b.exists() and os.path.samefile(a, b)


def _input_shapes(args) -> dict | None:
    from .feeds import parse_input_shape

    shapes = dict(parse_input_shape(text) for text in (getattr(args, "input_shape", None) or []))
    return shapes or None


def cmd_prune(args) -> int:
    src, dst = Path(args.input), Path(args.output)
    if src.exists() and _same_file(src, dst) and not args.overwrite_input:
        raise InputError(f"{dst}: refusing to overwrite the input model (pass --overwrite-input to allow it)")
    budgets = [b for b in (args.target_macs, args.target_params, args.target_latency) if b is not None]
    if sum(x is not None for x in (args.ratio, args.plan)) + len(budgets) != 1:
        raise InputError("give exactly one of --ratio R, --target-macs F, --target-params F, --target-latency F "
                         "(choose channels) or --plan REPORT.json (replay)")
    _check_pictures(args, src)
    if args.shard_size:
        parse_size(args.shard_size)  # a bad size fails before the work, not after
    start = time.perf_counter()
    try:
        result = _api().prune(src, ratio=args.ratio or 0.0, importance=args.importance,
                           global_ranking=args.global_ranking, round_to=args.round_to,
                           keep=args.keep, exact=args.exact, verify=not args.no_verify,
                           max_group_ratio=args.max_group_ratio, plan=args.plan,
                           input_shapes=_input_shapes(args), calibration=args.calibration,
                           calibration_samples=args.calibration_samples, repair=args.repair,
                           target_macs=args.target_macs, target_params=args.target_params,
                           target_latency=args.target_latency, gqa_heads=args.gqa_heads,
                           rotate=args.rotate, allocation=args.allocation)
    except VerificationError as exc:
        print(f"graphprune: {exc}; nothing was written", file=sys.stderr)
        return EXIT_VERIFY
    pictures = _prune_pictures(args, src, result)
    with signals.deferred():  # the model, its report and pictures, or none of them
        _save_like_input(result.model, src, dst, args.shard_size)
        if args.report:
            _write_json(Path(args.report), result.report)
        _write_pictures(pictures)
    if not _quiet(args):
        print_prune_summary(result.report, time.perf_counter() - start)
        print(f"wrote {dst}" + "".join(f", {path}" for path, _ in pictures))
    if getattr(args, "bench", False):
        from .bench import bench_after_write

        bench_after_write(args, src, dst)
    return EXIT_OK


def _write_json(path: Path, data: dict) -> None:
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _quiet(args) -> bool:
    return bool(getattr(args, "quiet", False))


def _check_pictures(args, src: Path) -> None:
    """Refuse bad --plot/--html paths (and --plot without matplotlib) before any work is done."""
    from .plots import require_matplotlib

    for flag, path, suffixes in (("--plot", getattr(args, "plot", None), (".png",)),
                                 ("--html", getattr(args, "html", None), (".html", ".htm"))):
        if path is None:
            continue
        path = Path(path)
        if path.suffix.lower() not in suffixes:
            raise InputError(f"{path}: {flag} writes a {'PNG image' if flag == '--plot' else 'web page'}; "
                             f"give a path ending in {suffixes[0]}")
        if not path.parent.is_dir():
            raise InputError(f"{path}: directory {path.parent} does not exist")
        if src.exists() and _same_file(src, path):
            raise InputError(f"{path}: refusing to overwrite the input model with {flag}")
    if getattr(args, "plot", None):
        require_matplotlib()


def _pictures(args, data: dict, layers_after, analysis, title: str) -> list[tuple[Path, bytes]]:
    """The --plot PNG and --html page, rendered (written later, with the other outputs)."""
    from .html_report import group_structure, render_html, with_structure
    from .plots import readable_names, render_png, renamed

    out = []
    structure = group_structure(analysis)
    with progress.step("pictures"):
        if getattr(args, "plot", None):
            shown = dict(data, groups=with_structure(data.get("groups", []), structure),
                         pinned=with_structure(data.get("pinned", []), structure))
            shown, after = renamed(shown, layers_after, readable_names(analysis.graph))
            out.append((Path(args.plot), render_png(shown, after, title)))
        if getattr(args, "html", None):
            out.append((Path(args.html), render_html(data, layers_after, structure, title).encode("utf-8")))
    return out


def _prune_pictures(args, src: Path, result) -> list[tuple[Path, bytes]]:
    if not (getattr(args, "plot", None) or getattr(args, "html", None)):
        return []
    from .metrics import layer_table

    analysis = result.plan.analysis  # its graph is the pruned one, shapes refreshed
    with progress.step("layer table of the input"):
        before = layer_table(_api().load(src, input_shapes=_input_shapes(args)))
    return _pictures(args, dict(result.report, layers=before), layer_table(analysis.graph), analysis,
                     f"{src.name}: prune")


def _write_pictures(pictures: list[tuple[Path, bytes]]) -> None:
    from .plots import write_atomic

    for path, payload in pictures:
        write_atomic(path, payload)


def cmd_inspect(args) -> int:
    src = Path(args.input)
    _check_pictures(args, src)
    info, analysis = _api().inspect_analysis(src, input_shapes=_input_shapes(args), gqa_heads=args.gqa_heads)
    if args.plot or args.html:
        pictures = _pictures(args, info, None, analysis, f"{src.name}: inspect")
        with signals.deferred():
            _write_pictures(pictures)
    else:
        pictures = []
    if args.json:
        print(json.dumps(info, indent=1))
        return EXIT_OK
    at = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in info["macs_at"].items())
    print(f"params {short(info['params'])}, MACs {short(info['macs'])} (at {at})")
    print(f"\nprunable groups ({len(info['groups'])}):")
    if info["groups"]:
        print_table([("group", "channels", "parameters")] + [
            (g["id"], g["channels"], ", ".join(g["parameters"][:3]) + (" …" if len(g["parameters"]) > 3 else ""))
            for g in info["groups"]])
    print(f"\npinned groups with parameters ({len(info['pinned'])}):")
    if info["pinned"]:
        print_table([("group", "channels", "reason")] + [
            (g["id"], g["channels"], g["pinned"]) for g in info["pinned"]])
    print("\nlayers:")
    print_table([("node", "op", "params", "MACs")] + [
        (r["node"], r["op"], short(r["params"]), short(r["macs"])) for r in info["layers"]])
    if pictures and not _quiet(args):
        print("\nwrote " + ", ".join(str(path) for path, _ in pictures))
    return EXIT_OK


def print_pass_table(result) -> None:
    rows = [("pass", "changed", "nodes", "params", "MACs", "time", "check")]
    for r in result.flat():
        check = r.verification.status if r.verification else ("-" if not r.modified else "skipped")
        rows.append((r.name, r.details.get("changed", 0), f"{r.nodes[0]}→{r.nodes[1]}",
                     f"{short(r.params[0])}→{short(r.params[1])}", f"{short(r.macs[0])}→{short(r.macs[1])}",
                     f"{r.seconds:.3f}s", check))
    print_table(rows)
    total = result.verification.status if result.verification else None
    print(f"total: nodes {result.nodes[0]}→{result.nodes[1]}, params {short(result.params[0])}→"
          f"{short(result.params[1])}, MACs {short(result.macs[0])}→{short(result.macs[1])} in "
          f"{result.seconds:.2f}s" + (f"; end-to-end check: {total}" if total else ""))


def _run_and_write(args, runner) -> int:
    src, dst = Path(args.input), Path(args.output)
    if src.exists() and _same_file(src, dst) and not args.overwrite_input:
        raise InputError(f"{dst}: refusing to overwrite the input model (pass --overwrite-input to allow it)")
    if args.shard_size:
        parse_size(args.shard_size)
    try:
        model, result = runner()
    except VerificationError as exc:
        print(f"graphprune: {exc}; nothing was written", file=sys.stderr)
        return EXIT_VERIFY
    with signals.deferred():
        _save_like_input(model, src, dst, args.shard_size)
        if args.report:
            _write_json(Path(args.report), result.to_dict())
    if not _quiet(args):
        print_pass_table(result)
        print(f"wrote {dst}")
    if getattr(args, "bench", False):
        from .bench import bench_after_write

        bench_after_write(args, src, dst)
    return EXIT_OK


def cmd_fold(args) -> int:
    return _run_and_write(args, lambda: _api().fold(Path(args.input), verify=not args.no_verify,
                                                 input_shapes=_input_shapes(args)))


def cmd_run(args) -> int:
    return _run_and_write(args, lambda: _api().run_pipeline(Path(args.input), args.pipeline,
                                                         verify=not args.no_verify,
                                                         input_shapes=_input_shapes(args)))


def cmd_passes(args) -> int:
    from .passes import DEFAULT_FOLD, PASSES
    from .pipeline import pass_options

    rows = [("pass", "kind", "options", "what it does")]
    for name in sorted(PASSES):
        cls = PASSES[name]
        rows.append((name, "lossless" if cls.lossless else "lossy",
                     " ".join(pass_options(cls)) or "-", cls.summary))
    print_table(rows)
    print(f"\n`graphprune fold` runs: {','.join(n for n in DEFAULT_FOLD if n in PASSES)} (to a fixed point)")
    return EXIT_OK


def cmd_demo(args) -> int:
    try:
        from . import models
    except ImportError as exc:
        raise InputError(f"the demo needs torch and torchvision: pip install 'graphprune[torch]' ({exc})")
    if args.model not in models.available_models():
        raise InputError(f"unknown model '{args.model}': use a torchvision classifier name "
                         "(e.g. resnet50, mobilenet_v3_large, swin_t) or one of the zoo's own blocks "
                         "(mha_block, vit_block, tiny_cnn)")
    say = (lambda *_: None) if _quiet(args) else print
    say(f"exporting torchvision {args.model} (random weights) to ONNX ...")
    with progress.step(f"exporting {args.model}"):
        path = models.export_onnx(args.model)
    say(f"pruning {path} at ratio {args.ratio} (l2, local) ...")
    start = time.perf_counter()
    result = _api().prune(path, ratio=args.ratio)
    print_prune_summary(result.report, time.perf_counter() - start)
    if args.output:
        _api().save(result.model, args.output)
        say(f"wrote {args.output}")
    return EXIT_OK


QUIET_HELP = ("no progress on stderr and no summaries: prune, fold and run print nothing but errors "
              "(inspect, passes and demo still print their result). Without it, progress bars are shown "
              "on stderr when it is a terminal")
PLOT_HELP = ("also draw channels per group (kept vs original) and MACs per layer (before and after) into "
             "this PNG (needs matplotlib: pip install 'graphprune[plot]')")
HTML_HELP = ("also write a self-contained web page: totals, every group with the layers, parameters and tensors "
             "it couples, why each pinned group is pinned, params and MACs per layer (with the picture when "
             "matplotlib is installed)")

INPUT_SHAPE_HELP = ("size of an input with dynamic axes, e.g. input_ids=1x128 or images=1x3x640x640 "
                    "(repeatable); verification runs at it first and MACs are counted at it")


SHARD_HELP = ("write the weights as external data in files of at most SIZE (e.g. 2GB, 500MB): "
              "OUTPUT.data, OUTPUT.data.1, ...; a single larger tensor gets a file of its own")

GQA_HEADS_OPTION = dict(
    choices=("kv", "query", "both"), default="kv",
    help="grouped-query attention: 'kv' removes whole key/value groups (a kv head with its query "
         "heads; default), 'query' keeps every kv head and removes the same query heads inside "
         "every kv group, 'both' offers both")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphprune",
        description="Structured pruning as a graph compiler: find coupled channel groups, remove "
                    "channels across every coupled layer, emit a smaller verified ONNX model.",
        epilog="exit codes: 0 ok, 1 verification failed (nothing written), 2 bad input or usage, "
               "3 internal error")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prune", help="remove a fraction of every prunable channel group",
                       description="Remove the least important channels of every prunable group "
                                   "and write a smaller model, verified against the oracle.")
    p.add_argument("input", help="input .onnx model")
    p.add_argument("-o", "--output", required=True, help="output .onnx path (written atomically)")
    p.add_argument("--ratio", type=float, help="fraction of channels to remove, in [0, 1)")
    p.add_argument("--plan", metavar="REPORT.json",
                   help="replay the kept indices of an earlier --report instead of choosing by --ratio")
    p.add_argument("--target-macs", type=float, metavar="F",
                   help="instead of --ratio: keep at most this fraction of the MACs (channels ranked "
                        "across groups; the report's 'budget' gives the fraction reached)")
    p.add_argument("--target-params", type=float, metavar="F",
                   help="instead of --ratio: keep at most this fraction of the parameters")
    p.add_argument("--target-latency", type=float, metavar="F",
                   help="instead of --ratio: keep at most this fraction of the onnxruntime CPU latency, "
                        "measured at the verification shapes (a few pruning rounds search the MACs budget "
                        "that meets it)")
    p.add_argument("--importance", choices=CRITERIA + ACTIVATION_CRITERIA,
                   help="channel importance: l1/l2 norm over all parameter slices of a channel (default "
                        "without calibration: l2); with --calibration (default: the one matching --repair) "
                        "'activation' (‖W[:,j]‖·‖x_j‖, the output error of removing channel j; repair none), "
                        "'fluctuation' (‖W[:,j]‖·std(x_j), what bias "
                        "compensation leaves; repair bias) or 'reconstruction' (what a least-squares refit leaves, "
                        "1/Σ⁻¹_jj; needs channels² Gram matrices; on ONNX give it explicitly, the lsq default here is "
                        "activation)")
    p.add_argument("--calibration", metavar="FILE.npz|DIR",
                   help="calibration inputs: an .npz of arrays keyed by model input name (first axis the "
                        "samples; token ids for text models) or a directory of them; enables activation-"
                        "aware importance and the repair of the kept weights")
    p.add_argument("--calibration-samples", type=int, metavar="N", help="use at most N calibration samples")
    p.add_argument("--repair", choices=("auto",) + REPAIRS, default="auto",
                   help="after pruning, refit what remains on the calibration data: 'lsq' (least squares "
                        "per consumer, bias folded in; auto's choice with --calibration), 'bias' (mean "
                        "compensation only) or 'none'; kept only if it lowers the held-out output error")
    p.add_argument("--rotate", action="store_true",
                   help="with --calibration: first rotate every residual stream read through RMSNorms "
                        "into the principal axes of its calibration activations, norm scales folded "
                        "into their readers (checked to leave the outputs unchanged; tied embeddings "
                        "are untied), so pruning the hidden size removes the lowest-energy directions")
    p.add_argument("--global", dest="global_ranking", action="store_true",
                   help="rank channels across groups instead of within each group")
    p.add_argument("--max-group-ratio", type=float, default=0.9,
                   help="with --global, the largest fraction any one group may lose (default 0.9)")
    p.add_argument("--allocation", choices=("normalised", "cost"), default="normalised",
                   help="how --global and the --target-* budgets compare groups: 'normalised' ranks each "
                        "score against its group's mean (default; right for weight norms), 'cost' by squared "
                        "removal error per parameter removed, per MAC under --target-macs (for the calibrated "
                        "criteria, whose scores are absolute output errors)")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep a multiple of N channels per group")
    p.add_argument("--keep", metavar="REGEX",
                   help="do not prune groups touching a node or tensor whose name matches REGEX")
    p.add_argument("--exact", action="store_true",
                   help="prune only groups the oracle checks exactly: keep those normalised by a "
                        "LayerNorm/RMSNorm (a transformer's hidden size), which are otherwise pruned "
                        "and verified as approximate")
    p.add_argument("--gqa-heads", **GQA_HEADS_OPTION)
    p.add_argument("--report", metavar="FILE.json", help="write kept indices, params, MACs, groups, verification")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime oracle check")
    p.add_argument("--overwrite-input", action="store_true", help="allow OUTPUT to be the input file")
    p.add_argument("--shard-size", metavar="SIZE", help=SHARD_HELP)
    p.add_argument("--input-shape", action="append", metavar="NAME=DxD...", help=INPUT_SHAPE_HELP)
    p.add_argument("--plot", metavar="FILE.png", help=PLOT_HELP)
    p.add_argument("--html", metavar="FILE.html", help=HTML_HELP)
    add_bench_flag(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("inspect", help="show channel groups, pinned reasons, params and MACs",
                       description="Show the channel groups of a model: which are prunable, which "
                                   "are pinned and why, and params/MACs per layer.")
    p.add_argument("input", help="input .onnx model")
    p.add_argument("--gqa-heads", **GQA_HEADS_OPTION)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--input-shape", action="append", metavar="NAME=DxD...", help=INPUT_SHAPE_HELP)
    p.add_argument("--plot", metavar="FILE.png", help=PLOT_HELP)
    p.add_argument("--html", metavar="FILE.html", help=HTML_HELP)
    p.set_defaults(func=cmd_inspect)

    for name, helptext, func in (
            ("fold", "run the default lossless pipeline (folding, cleanup, dead channels)", cmd_fold),
            ("run", "run a pipeline of passes given as a spec or TOML file", cmd_run)):
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] +
                           "; every pass that changes the model is verified in onnxruntime.")
        p.add_argument("input", help="input .onnx model")
        p.add_argument("-o", "--output", required=True, help="output .onnx path (written atomically)")
        if name == "run":
            p.add_argument("--pipeline", required=True, metavar="SPEC",
                           help="comma list of passes with options, e.g. "
                                "'fold-constants,fold-batchnorm,prune-channels:ratio=0.5,dce', "
                                "or a .toml file ([[pass]] tables with name and options); "
                                "see `graphprune passes`")
        p.add_argument("--report", metavar="FILE.json", help="write the per-pass results as JSON")
        p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime checks")
        p.add_argument("--overwrite-input", action="store_true", help="allow OUTPUT to be the input file")
        p.add_argument("--shard-size", metavar="SIZE", help=SHARD_HELP)
        p.add_argument("--input-shape", action="append", metavar="NAME=DxD...", help=INPUT_SHAPE_HELP)
        add_bench_flag(p)
        p.set_defaults(func=func)

    add_bench_parser(sub)

    p = sub.add_parser("passes", help="list the available passes and their options",
                       description="List every registered pass with its options and one-line help.")
    p.set_defaults(func=cmd_passes)

    p = sub.add_parser("demo", help="export a torchvision model and prune it (needs graphprune[torch])",
                       description="Export a torchvision model with random weights to ONNX, prune it "
                                   "and print the before/after table and the verification result.")
    p.add_argument("--model", default="resnet18", help="model name from graphprune.models (default resnet18)")
    p.add_argument("--ratio", type=float, default=0.5, help="fraction to remove (default 0.5)")
    p.add_argument("-o", "--output", help="also write the pruned model here")
    p.set_defaults(func=cmd_demo)
    for command in sub.choices.values():  # --quiet also after the command name
        flags = [f for f in ("-q", "--quiet") if f not in command._option_string_actions]
        if flags:
            command.add_argument(*flags, dest="quiet", action="store_true", default=argparse.SUPPRESS,
                                 help=QUIET_HELP)
    return parser


def _one_line(message: str, args) -> str:
    """The error as one line that names the input file (added when the message does not)."""
    message = " ".join(str(message).split())
    source = getattr(args, "input", None)
    if source and str(source) not in message:
        message = f"{source}: {message}"
    return message


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    signals.install()
    progress.install(progress.terminal_reporter(args.quiet))
    try:
        return args.func(args)
    except GraphpruneError as exc:
        if args.debug:
            raise
        print(f"graphprune: error: {_one_line(exc, args)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return EXIT_OK
    except (KeyboardInterrupt, signals.Interrupted) as exc:
        code = getattr(exc, "exit_code", 130)
        print(f"graphprune: interrupted ({'SIGTERM' if code == 143 else 'SIGINT'}); nothing was written",
              file=sys.stderr)
        return code
    except MemoryError as exc:  # the model (or the sizes asked for) does not fit: not a bug
        if args.debug:
            raise
        print(f"graphprune: error: {_one_line(f'out of memory ({shorten(str(exc), 160)})', args)}; give smaller "
              "sizes with --input-shape, or skip the check with --no-verify", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # a bug: one line, not a traceback, unless --debug
        if args.debug:
            raise
        print(f"graphprune: internal error: {exc.__class__.__name__}: {shorten(str(exc), 300)} "
              "(re-run with --debug and report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
