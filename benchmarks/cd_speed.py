"""How much does contextual decomposition cost, against a forward pass and against
Captum's methods on the same groups? (The core issue's speed benchmark.)

LeNet-sized CNN (conv 32 - pool - conv 64 - pool - fc 128 - fc 10) on 28x28 inputs,
2 threads, medians of interleaved repeats, ratios to a forward pass measured in the
same run:

  A. one feature group at batch 64, against a forward pass at batch 64;
  B. 64 groups (an 8x8 grid of blocks) of one image, against a forward pass at batch 65
     (the floor: one ordinary pass shared by the 64 groups).

CD is also timed with its elementwise work done eagerly ("CD, eager elementwise"), to
show what deferring it past max pooling saves, and without spatial windows ("CD, dense"),
to show what running each group's convolutions on a box around it saves.

Side by side on the same groups: Captum's IntegratedGradients (50 steps), DeepLift and
FeatureAblation, and the original acd 0.0.2 ``cd`` (one call per group) if installed.

    python benchmarks/cd_speed.py            # full
    python benchmarks/cd_speed.py --quick    # a few repeats (the test suite runs this)
"""

import argparse
import copy
import json
import os
import sys

import warnings

import torch
from captum.attr import DeepLift, FeatureAblation, IntegratedGradients

from captum_cd import ContextualDecomposition
from captum_cd.attr import decomposition
from captum_cd.attr.windows import spatial_windows

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: experiments/
from experiments.models import lenet  # noqa: E402

try:
    from benchmarks._timing import median_times, print_table
except ImportError:  # run as a script from the benchmarks folder
    from _timing import median_times, print_table


def block_masks(groups: int, size: int = 28) -> torch.Tensor:
    """``groups`` square regions tiling the image (64 -> an 8x8 grid of ~3.5 px blocks)."""
    side = int(groups**0.5)
    ids = (torch.arange(size) * side // size)
    grid = ids[:, None] * side + ids[None, :]
    return (grid[None] == torch.arange(groups)[:, None, None]).float().unsqueeze(1)


def run(quick: bool) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", module="captum")
    model = lenet().eval()
    cd = ContextualDecomposition(model)
    ig, dl, fa = IntegratedGradients(model), DeepLift(model), FeatureAblation(model)
    repeats = 3 if quick else 30
    try:
        import acd
    except ImportError:
        acd = None

    results = {}
    # A: one group (the centre 14x14) at batch 64.
    x64 = torch.randn(64, 1, 28, 28)
    centre = torch.zeros(1, 1, 28, 28)
    centre[..., 7:21, 7:21] = 1
    ids_a = centre.long()  # feature ids: 1 = the group, 0 = the rest
    labels = torch.zeros(64, dtype=torch.long)
    cases_a = {
        "forward": lambda: _no_grad(model, x64),
        "CD": lambda: _no_grad(cd.decompose, x64, centre),
        "CD, eager elementwise": lambda: _eager(cd.decompose, x64, centre),
        "CD, dense (no windows)": lambda: _dense(cd.decompose, x64, centre),
        "IntegratedGradients (50 steps)": lambda: ig.attribute(x64, target=labels, n_steps=50, internal_batch_size=64 * 50),
        "DeepLift": lambda: dl.attribute(x64, target=labels),
        "FeatureAblation": lambda: fa.attribute(x64, target=labels, feature_mask=ids_a, perturbations_per_eval=2),
    }
    if acd is not None:
        acd_model = copy.deepcopy(model)
        cases_a["acd 0.0.2 cd"] = lambda: acd.cd(x64, acd_model, mask=centre[0].numpy(), device="cpu")
    results["A: 1 group, batch 64"] = median_times(cases_a, repeats)

    # B: 64 groups of one image.
    x1 = torch.randn(1, 1, 28, 28)
    masks = block_masks(64)
    ids_b = (masks * torch.arange(64).view(64, 1, 1, 1)).sum(0, keepdim=True).long()
    x65 = torch.randn(65, 1, 28, 28)
    cases_b = {
        "forward (batch 65)": lambda: _no_grad(model, x65),
        "CD": lambda: _no_grad(cd.decompose, x1, masks),
        "CD, eager elementwise": lambda: _eager(cd.decompose, x1, masks),
        "CD, dense (no windows)": lambda: _dense(cd.decompose, x1, masks),
        "IntegratedGradients (50 steps)": lambda: ig.attribute(x1, target=0, n_steps=50),
        "DeepLift": lambda: dl.attribute(x1, target=0),
        "FeatureAblation": lambda: fa.attribute(x1, target=0, feature_mask=ids_b, perturbations_per_eval=64),
    }
    if acd is not None:
        cases_b["acd 0.0.2 cd (64 calls)"] = lambda: [acd.cd(x1, acd_model, mask=m[0].numpy(), device="cpu") for m in masks]
    results["B: 64 groups, 1 image"] = median_times(cases_b, repeats)
    return results


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def _eager(fn, *args):
    with decomposition.lazy_elementwise(False):
        return _no_grad(fn, *args)


def _dense(fn, *args):
    with spatial_windows(False):
        return _no_grad(fn, *args)


def report(results: dict) -> None:
    for title, times in results.items():
        base = next(iter(times.values()))
        rows = [(name, f"{t * 1e3:.2f}", f"{t / base:.2f}x") for name, t in times.items()]
        print_table(title, rows, ["method", "median ms", "ratio to forward"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the medians (seconds) to this file")
    args = parser.parse_args()
    results = run(args.quick)
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
