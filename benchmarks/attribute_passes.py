"""What do passes of whole examples save when ``attribute`` needs several passes?

LeNet-sized CNN, 256 images of 28x28, 49 groups (a 7x7 grid of 4x4 blocks): 12544 rows,
more than one pass holds (1024 rows by default), so ``attribute`` makes several passes.
It fills each with whole examples and all their groups, so the ordinary forward pass runs
once per example. Beside it, the same call with ``additional_forward_args=()``: extra
arguments may or may not follow the batch, so there ``attribute`` keeps the whole batch
in every pass and cuts the groups instead, repeating the ordinary pass for every chunk of
groups (what it did for every call before). Same process, medians of interleaved
repeats, ratios to a forward pass at batch 256, 1 thread (on a loaded 2-core machine
two threads mostly wait for each other).

    python benchmarks/attribute_passes.py [--quick]
"""

import argparse
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from captum_cd import ContextualDecomposition, grid_ids  # noqa: E402
from experiments.models import lenet  # noqa: E402

try:
    from benchmarks._timing import median_times, print_table
except ImportError:
    from _timing import median_times, print_table


def main(quick: bool) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")
    model = lenet().eval()
    cd = ContextualDecomposition(model)
    batch = 32 if quick else 256
    x, target, ids = torch.randn(batch, 1, 28, 28), torch.zeros(batch, dtype=torch.long), grid_ids(28, 28, 4)
    per_pass = 4 if quick else None  # quick: few rows a pass, so there are several passes
    examples = cd.attribute(x, target=target, feature_mask=ids, perturbations_per_eval=per_pass)
    groups = cd.attribute(x, target=target, feature_mask=ids, perturbations_per_eval=per_pass, additional_forward_args=())
    print(f"largest difference between the two: {(examples - groups).abs().max().item():.1e}")

    def forward():
        with torch.no_grad():
            model(x)

    times = median_times(
        {
            f"forward (batch {batch})": forward,
            "attribute, passes of whole examples": lambda: cd.attribute(x, target=target, feature_mask=ids, perturbations_per_eval=per_pass),
            "attribute, chunks of groups over the whole batch": lambda: cd.attribute(
                x, target=target, feature_mask=ids, perturbations_per_eval=per_pass, additional_forward_args=()
            ),
        },
        3 if quick else 7,
    )
    base = next(iter(times.values()))
    rows = [(name, f"{t * 1e3:.0f}", f"{t / base:.1f}x") for name, t in times.items()]
    print_table(f"49 groups, batch {batch}", rows, ["method", "median ms", "ratio to forward"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
