"""How fast does a hierarchy appear? AgglomerativeCD at pixel level, and against the
original acd 0.0.2.

Table "AgglomerativeCD, whole hierarchy" (issue 14's goals side by side in one run): one
digit from scikit-learn's digits, the whole hierarchy at pixel level (every pixel
selected, then the final pairwise merges), percentile 99.5, one thread:

- 28x28, a LeNet-sized CNN (conv 32 - pool - conv 64 - pool - fc 128 - fc 10) with its
  random initial weights ("untrained"), and the same CNN trained for a few seconds on
  the digits upsampled to 28x28 ("trained");
- 64x64 (the digit upsampled), the same layers with a wider first linear layer, untrained.

Each row is the median of interleaved repeats, with the batched CD passes, the groups
(sets of pixels) they scored, the levels, the time inside the CD passes and the rest,
AgglomerativeCD's own bookkeeping (components, candidates, cache).

Table "AgglomerativeCD against the original": the trained 28x28 CNN, a budget of 5 and
25 iterations, against acd 0.0.2's ``agg_2d`` (one CD call per candidate) on the same
image and budget, both without the final merging (which the original runs past its
budget).

``--quick``: blocks instead of pixels (4x4 at 28x28, 8x8 at 64x64: 49 and 64 units), one
epoch of training, one repeat, the original with a budget of 2 on the same blocks. Tables are printed and, where ``$CAPTUM_CD_TABLES``
names a file, recorded there as JSON lines (``benchmarks/_timing.print_table``).

    python benchmarks/acd_speed.py [--quick] [--threads 1]
"""

import argparse
import copy
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from captum_cd import AgglomerativeCD

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: experiments/
from experiments.datasets.digits import load_digits  # noqa: E402
from experiments.models import accuracy, lenet, train_classifier  # noqa: E402

try:
    from benchmarks._timing import print_table, progress
except ImportError:
    from _timing import print_table, progress

PERCENTILE = 99.5


def lenet_for(size: int) -> nn.Sequential:
    """The LeNet-sized CNN for ``size x size`` inputs: the first linear layer takes what
    the convolutions leave (64 x 4 x 4 at 28, 64 x 13 x 13 at 64)."""
    side = ((size - 4) // 2 - 4) // 2
    model = lenet()
    model[7] = nn.Linear(64 * side * side, 128)
    return model.eval()


def cases(quick: bool):
    """(name, model, image, target, block) for each row of the first table, and the trained
    28x28 case (for the comparison with the original)."""
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = load_digits()
    up = lambda x, size: F.interpolate(x, size=size, mode="bilinear")  # noqa: E731
    progress("training the LeNet on 28x28 digits")
    trained = train_classifier(lenet(), up(x_train, 28), y_train, epochs=1 if quick else 3)
    print(f"LeNet on 28x28 digits: test accuracy {accuracy(trained, up(x_test, 28), y_test):.3f}")
    torch.manual_seed(0)
    untrained28, untrained64 = lenet_for(28), lenet_for(64)
    rows = []
    for name, model, size in (("28x28, untrained", untrained28, 28), ("28x28, trained", trained, 28), ("64x64, untrained", untrained64, 64)):
        image = up(x_test[:1], size)
        with torch.no_grad():
            target = int(model(image).argmax(1))
        block = {28: 4, 64: 8}[size] if quick else 1
        rows.append((f"{name}, {f'{block}x{block} blocks' if quick else 'pixels'}", model, image, target, block))
    return rows


def ours(agg: AgglomerativeCD, image, target, budget, block):
    """Time of one hierarchy, its CD passes (groups in each) and the time inside them."""
    passes, inside = [], [0.0]
    decompose = agg.cd.decompose

    def counted(*args, **kwargs):
        start = time.perf_counter()
        try:
            return decompose(*args, **kwargs)
        finally:
            inside[0] += time.perf_counter() - start
            passes.append(args[1].shape[0])

    agg.cd.decompose = counted
    try:
        start = time.perf_counter()
        h = agg.hierarchy(image, target, percentile=PERCENTILE, max_iterations=budget, block_size=block)
        return {"seconds": time.perf_counter() - start, "cd seconds": inside[0], "passes": len(passes), "groups": sum(passes), "hierarchy": h}
    finally:
        agg.cd.decompose = decompose


def original(model, image, target, budget, block):
    """acd 0.0.2's agg_2d, made to run here (numpy 2 lost np.int; agg_2d forgets to pass
    the device on, so its cd() would ask for CUDA). Its final pairwise merging, which it
    runs past its budget, is left out: both sides run ``budget`` iterations, no more."""
    np.int = int
    from acd.agglomeration import agg_2d
    from acd.scores import score_funcs

    cd, calls = score_funcs.cd, [0]

    def cd_on_cpu(im, m, mask, model_type=None, device="cuda"):
        calls[0] += 1
        return cd(im, m, mask, model_type, device="cpu")

    score_funcs.cd = cd_on_cpu
    merge_final, agg_2d.agglomerate_final = agg_2d.agglomerate_final, lambda lists, *a, **k: lists
    try:
        start = time.perf_counter()
        agg_2d.agglomerate(copy.deepcopy(model), None, PERCENTILE, "cd", block, image[0, 0].numpy(), target, num_iters=budget, im_torch=image, model_type=None, device="cpu")
        return time.perf_counter() - start, calls[0]
    finally:
        score_funcs.cd, agg_2d.agglomerate_final = cd, merge_final


def medians(runs):
    """The median time of the runs, and what every run shares (passes, groups, levels)."""
    first = runs[0]
    assert all(r["groups"] == first["groups"] and r["passes"] == first["passes"] for r in runs), "runs differ"
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cd seconds": statistics.median(r["cd seconds"] for r in runs),
        "own seconds": statistics.median(r["seconds"] - r["cd seconds"] for r in runs),
        **{k: first[k] for k in ("passes", "groups", "hierarchy")},
    }


def whole_hierarchies(rows, repeats: int) -> None:
    """The first table: each case's whole hierarchy, repeats interleaved (the 64x64 case,
    ten times slower, in the first three rounds only)."""
    aggs = [AgglomerativeCD(model) for _, model, *_ in rows]
    ours(aggs[0], rows[0][2], rows[0][3], 3, rows[0][4])  # warm-up: the first call is slow
    runs = [[] for _ in rows]
    for round_ in range(repeats):
        for i, (name, _, image, target, block) in enumerate(rows):
            if "64x64" in name and round_ >= 3:
                continue
            progress(f"round {round_ + 1}/{repeats}: {name}")
            runs[i].append(ours(aggs[i], image, target, None, block))
    table = []
    for (name, *_), case_runs in zip(rows, runs):
        m = medians(case_runs)
        h = m["hierarchy"]
        table.append([
            name, f"{m['seconds']:.3f}", len(case_runs), h.unit_scores.size, len(h.levels) - len(h.merges), len(h.merges),
            m["passes"], m["groups"], f"{m['cd seconds']:.3f}", f"{m['own seconds']:.3f}",
            f"{1000 * m['cd seconds'] / m['groups']:.3f}",
        ])  # fmt: skip
    print_table(
        f"AgglomerativeCD, whole hierarchy (percentile {PERCENTILE}, {torch.get_num_threads()} thread(s), medians)",
        table,
        ["case", "median s", "runs", "units", "iterations", "merges", "passes", "groups", "CD s", "own s", "CD ms/group"],
    )


def against_original(row, quick: bool, repeats: int) -> None:
    """The second table: budgets of iterations on the trained CNN, ours and the original."""
    name, model, image, target, block = row
    try:
        import acd  # noqa: F401
    except ImportError:
        print("\n(acd 0.0.2 is not installed: no comparison with the original)")
        return
    agg = AgglomerativeCD(model)
    table = []
    for budget in [2] if quick else [5, 25]:
        progress(f"budget {budget}: captum-cd, then acd 0.0.2 (one CD call per candidate)")
        m = medians([ours(agg, image, target, budget, block) for _ in range(repeats)])
        old_seconds, calls = original(model, image, target, budget, block)
        table.append([budget, f"{m['seconds']:.3f}", m["passes"], m["groups"], len(m["hierarchy"].levels), f"{old_seconds:.2f}", calls, f"{old_seconds / m['seconds']:.0f}x"])
    print_table(
        f"AgglomerativeCD against the original agg_2d ({name}, budgets of iterations, no final merging)",
        table,
        ["iterations", "captum-cd s", "passes", "groups", "levels", "acd 0.0.2 s", "CD calls", "speed-up"],
    )


def main(quick: bool, threads: int) -> None:
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    rows = cases(quick)
    whole_hierarchies(rows, 1 if quick else 5)
    against_original(rows[1], quick, 1 if quick else 3)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    main(args.quick, args.threads)
