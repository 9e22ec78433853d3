"""captum-cd in one minute: CD scores for image regions next to Captum's methods.

A small CNN is trained on scikit-learn's 8x8 digits (a few seconds on 2 CPU cores).
For test images, each 2x2 block of pixels is a region; every method scores the
regions for the predicted class:

- ContextualDecomposition: the CD score of each region, all 16 regions in one pass;
- IntegratedGradients and DeepLift: pixel attributions summed over each region;
- FeatureAblation: the drop in the output when the region is set to 0.

It prints how much each costs and how well each agrees with CD, then writes the
regions' scores side by side to ``outputs/demo.png``.

    python examples/demo.py [--out outputs]
"""

import argparse
import json
import os
import sys
import time
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from captum.attr import DeepLift, FeatureAblation, IntegratedGradients  # noqa: E402

from captum_cd import ContextualDecomposition, grid_ids  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: experiments/
from experiments.datasets.digits import load_digits  # noqa: E402
from experiments.models import accuracy, small_cnn, train_classifier  # noqa: E402


def per_region(pixel_attributions: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Sums pixel attributions within each region: (B, 1, H, W) -> (B, regions)."""
    flat = pixel_attributions.flatten(1)
    index = ids.flatten().expand_as(flat)
    return torch.zeros(flat.shape[0], int(ids.max()) + 1).scatter_add_(1, index, flat)


def main(out_dir: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", module="captum")

    x_train, y_train, x_test, y_test = load_digits()
    start = time.perf_counter()
    model = train_classifier(small_cnn(), x_train, y_train, epochs=15)
    results = {"test accuracy": accuracy(model, x_test, y_test), "methods": {}}
    print(f"small CNN on digits: test accuracy {results['test accuracy']:.3f} "
          f"(trained in {time.perf_counter() - start:.1f} s)")

    images = x_test[:32]
    with torch.no_grad():
        predicted = model(images).argmax(1)
    ids = grid_ids(8, 8, 2)  # Captum-style feature mask: one id per 2x2 block
    methods = {
        "CD": lambda: per_region(ContextualDecomposition(model).attribute(images, target=predicted, feature_mask=ids), ids) / 4,
        "IntegratedGradients": lambda: per_region(IntegratedGradients(model).attribute(images, target=predicted, n_steps=50), ids),
        "DeepLift": lambda: per_region(DeepLift(model).attribute(images, target=predicted), ids),
        "FeatureAblation": lambda: per_region(FeatureAblation(model).attribute(images, target=predicted, feature_mask=ids, perturbations_per_eval=16), ids) / 4,
    }  # CD and ablation give every pixel its region's score: /4 undoes the sum over 2x2 pixels
    scores, seconds = {}, {}
    for name, run in methods.items():
        start = time.perf_counter()
        scores[name] = run().detach()
        seconds[name] = time.perf_counter() - start

    print(f"\n16 regions (2x2 blocks) of {len(images)} test images, scored for the predicted class:")
    print(f"{'method':<22}{'seconds':>9}{'corr. with CD':>15}")
    for name in methods:
        corr = torch.stack([torch.corrcoef(torch.stack([scores["CD"][i], scores[name][i]]))[0, 1] for i in range(len(images))])
        print(f"{name:<22}{seconds[name]:>9.3f}{corr.nanmean().item():>15.2f}")
        results["methods"][name] = {"seconds": seconds[name], "corr. with CD": corr.nanmean().item()}

    path = os.path.join(out_dir, "demo.png")
    plot(images[:4], predicted[:4], scores, ids, path)
    print(f"\npicture: {path}")
    with open(os.path.join(out_dir, "demo_results.json"), "w") as f:
        json.dump(results, f, indent=1)  # what the test suite checks


def plot(images, predicted, scores, ids, path) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig, axes = plt.subplots(len(images), len(scores) + 1, figsize=(2 * (len(scores) + 1), 2 * len(images)))
    for i, image in enumerate(images):
        axes[i, 0].imshow(image[0], cmap="gray_r")
        axes[i, 0].set_title(f"predicted {predicted[i].item()}", fontsize=9)
        for j, (name, s) in enumerate(scores.items(), start=1):
            region_map = s[i][ids[0, 0]]
            limit = region_map.abs().max().item() or 1.0
            axes[i, j].imshow(region_map, cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes[i, j].set_title(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Region scores for the predicted class (red: for, blue: against)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs", help="folder for the picture (default: outputs)")
    main(parser.parse_args().out)
