"""How fast does a hierarchy appear? AgglomerativeCD against the original acd 0.0.2.

A LeNet-sized CNN (conv 32 - pool - conv 64 - pool - fc 128 - fc 10) trained for a few
seconds on scikit-learn's digits upsampled to 28x28; one test image at pixel level
(block size 1), percentile 99.5, 2 threads. Reports the time, the number of batched CD
passes and of groups scored, for a budget of 5 and 25 iterations and for "until every
pixel is selected"; and the original ``agg_2d`` on the same image and budget (one CD
call per candidate), side by side, in one run.

    python benchmarks/acd_speed.py [--quick]
"""

import argparse
import copy
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from captum_cd import AgglomerativeCD

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: experiments/
from experiments.datasets.digits import load_digits  # noqa: E402
from experiments.models import accuracy, lenet, train_classifier  # noqa: E402

try:
    from benchmarks._timing import progress
except ImportError:
    from _timing import progress


def trained_lenet():
    x_train, y_train, x_test, y_test = load_digits()
    up = lambda x: F.interpolate(x, size=28, mode="bilinear")  # noqa: E731
    model = train_classifier(lenet(), up(x_train), y_train, epochs=3)
    return model, up(x_test), y_test


def ours(agg, image, target, budget):
    passes = []
    decompose = agg.cd.decompose
    agg.cd.decompose = lambda *a, **k: passes.append(a[1].shape[0]) or decompose(*a, **k)
    try:
        start = time.perf_counter()
        h = agg.hierarchy(image, target, percentile=99.5, max_iterations=budget)
        return time.perf_counter() - start, len(passes), sum(passes), h
    finally:
        agg.cd.decompose = decompose


def original(model, image, target, budget):
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
        agg_2d.agglomerate(copy.deepcopy(model), None, 99.5, "cd", 1, image[0, 0].numpy(), target, num_iters=budget, im_torch=image, model_type=None, device="cpu")
        return time.perf_counter() - start, calls[0]
    finally:
        score_funcs.cd, agg_2d.agglomerate_final = cd, merge_final


def main(quick: bool) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    progress("training the LeNet")
    model, x_test, y_test = trained_lenet()
    print(f"LeNet on 28x28 digits: test accuracy {accuracy(model, x_test, y_test):.3f}")
    image = x_test[:1]
    target = int(model(image).argmax(1))
    agg = AgglomerativeCD(model)
    budgets = [5] if quick else [5, 25, None]
    try:
        import acd  # noqa: F401
    except ImportError:
        acd = None
    print(f"\n{'iterations':<12}{'captum-cd s':>12}{'passes':>8}{'groups':>8}{'levels':>8}{'acd 0.0.2 s':>13}{'CD calls':>10}{'ratio':>8}")
    for budget in budgets:
        progress(f"budget {budget or 'none'}: captum-cd")
        times = [ours(agg, image, target, budget) for _ in range(1 if quick else 3)]
        seconds = float(np.median([t[0] for t in times]))
        _, passes, groups, h = times[0]
        row = f"{str(budget or 'all'):<12}{seconds:>12.3f}{passes:>8}{groups:>8}{len(h.levels):>8}"
        if acd is not None and budget is not None and (not quick or budget == 5):
            progress(f"budget {budget}: acd 0.0.2 (one CD call per candidate)")
            old_seconds, calls = original(model, image, target, budget)
            row += f"{old_seconds:>13.2f}{calls:>10}{old_seconds / seconds:>7.0f}x"
        print(row)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
