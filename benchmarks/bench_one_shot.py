"""One-shot quality on real trained weights, graphprune against Torch-Pruning in one run.

    python benchmarks/bench_one_shot.py digits [--epochs 30]

``digits``: a small CNN trained here on scikit-learn's digits (8×8 images,
1,437 train / 360 test), pruned to 2× and 4× fewer MACs with no fine-tuning.
Each tool's ratio is searched so the pruned MACs meet the budget; accuracy on
the test split is printed for every criterion of each tool. graphprune's
calibration data is 512 training images (its held-out part included).
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
    dense = train(DigitsNet(), x_train, y_train, epochs)
    example = x_train[:2]
    dense_macs = macs_of(dense, example)
    print(f"digits CNN: dense test accuracy {accuracy(dense, x_test, y_test):.4f}, MACs {dense_macs:,}")
    calib_x, calib_y = x_train[:512], y_train[:512]
    calib = [calib_x[i:i + 64] for i in range(0, len(calib_x), 64)]
    configs = [("torch-pruning", c, None) for c in ("l1", "l2", "bn_scale", "taylor")]
    configs += [("graphprune", c, "none") for c in ("l1", "l2", "bn_scale")]
    configs += [("graphprune", c, r) for c in ("activation", "fluctuation") for r in ("none", "bias", "lsq")]
    print(f"| tool | importance | repair | {' | '.join(f'{f}× fewer MACs: acc (MACs kept)' for f in (2, 4))} | seconds |")
    print("|---|---|---|---|---|---|")
    for tool, criterion, repair in configs:
        cells, started = [], time.perf_counter()
        for factor in (2, 4):
            if tool == "torch-pruning":
                prune_at = lambda r: tp_prune(dense, example, r, criterion, calib_x, calib_y)  # noqa: E731
            else:
                needs_calib = criterion in ("activation", "fluctuation") or repair != "none"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=["digits"])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.benchmark == "digits":
        run_digits(args.epochs)


if __name__ == "__main__":
    main()
