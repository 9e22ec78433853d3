"""captum-cd in one minute: CD scores for image regions next to Captum's methods.

A small CNN is trained on scikit-learn's 8x8 digits (a few seconds on 2 CPU cores).
For test images, each 2x2 block of pixels is a region; every method scores the
regions for the predicted class:

- ContextualDecomposition: the CD score of each region, all 16 regions in one pass;
- IntegratedGradients and DeepLift: pixel attributions summed over each region;
- FeatureAblation: the drop in the output when the region is set to 0.

It prints how much each costs, how well each agrees with CD and where they differ, then
writes the regions' scores side by side to ``outputs/demo.png`` (Captum's colours on one
scale for every panel: green for the class, red against).

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
import torch.nn.functional as F  # noqa: E402
from captum.attr import DeepLift, FeatureAblation, IntegratedGradients  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402

from captum_cd import ContextualDecomposition, grid_ids, ids_to_masks  # noqa: E402

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
    interactions = with_interactions(model, images, predicted, ids)
    results["where they differ"] = differences(scores, interactions, per_region(images, ids) > 0)
    for line in results["where they differ"]["summary"]:
        print(line)

    path = os.path.join(out_dir, "demo.png")
    plot(images[:4], predicted[:4], scores, ids, path)
    print(f"\npicture: {path}")
    with open(os.path.join(out_dir, "demo_results.json"), "w") as f:
        json.dump(results, f, indent=1)  # what the test suite checks


def with_interactions(model, images, target, ids) -> torch.Tensor:
    """Each region's CD score with its interactions with the other regions: CD of the whole
    image minus CD of everything but the region, (B, regions)."""
    masks = ids_to_masks(ids)  # (regions, 1, H, W)
    cd = ContextualDecomposition(model)
    with torch.no_grad():
        whole, _ = cd.decompose(images, torch.ones_like(masks[:1]))
        rest, _ = cd.decompose(images, 1 - masks)
    at_target = lambda relevant: relevant[:, torch.arange(len(images)), target].T  # noqa: E731
    return at_target(whole) - at_target(rest)


def differences(scores, interactions, inked):
    """Where CD and the gradient methods differ, on the regions with ink (blank regions get
    exactly 0 from every method): how often the signs agree, the mean difference, and the
    same for CD with the regions' interactions counted."""
    flat = lambda t: t[inked]  # noqa: E731
    corr = lambda a, b: torch.corrcoef(torch.stack([flat(a), flat(b)]))[0, 1].item()  # noqa: E731
    cd, result = scores["CD"], {"inked regions": int(inked.sum()), "summary": []}
    for name in ("IntegratedGradients", "DeepLift"):
        other = scores[name]
        clear = inked & (other.abs() > 0.1)  # a clearly non-zero score, so that its sign means something
        result[name] = {
            "same sign %": 100 * ((cd[clear] > 0) == (other[clear] > 0)).float().mean().item(),
            "mean CD - it": flat(cd - other).mean().item(),
            "mean CD with interactions - it": flat(interactions - other).mean().item(),
            "corr. CD": corr(cd, other),
            "corr. CD with interactions": corr(interactions, other),
        }
        r = result[name]
        result["summary"].append(
            f"{name}: same sign as CD on {r['same sign %']:.0f}% of the regions with ink; CD - {name} "
            f"{r['mean CD - it']:+.2f} on average, {r['mean CD with interactions - it']:+.2f} with the regions' "
            f"interactions counted; correlation {r['corr. CD']:.2f}, with interactions {r['corr. CD with interactions']:.2f}"
        )
    return result


CAPTUM_COLOURS = LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"])  # captum.attr.visualization's for sign="all"


def outline(ax, image, ids) -> None:
    """The digit's outline (its ink at a quarter of the maximum, smoothed) and the regions' borders."""
    fine = F.interpolate(image[None], scale_factor=8, mode="bilinear", align_corners=False)[0, 0]
    size = image.shape[-1]
    ax.contour(torch.linspace(-0.5, size - 0.5, fine.shape[-1]), torch.linspace(-0.5, size - 0.5, fine.shape[-2]), fine,
               levels=[0.25], colors="black", linewidths=0.8)
    block = int((ids[0, 0, 0] == ids[0, 0, 0, 0]).sum())  # the regions' width in pixels
    for edge in range(block, size, block):
        ax.axhline(edge - 0.5, color="grey", linewidth=0.5), ax.axvline(edge - 0.5, color="grey", linewidth=0.5)


def plot(images, predicted, scores, ids, path) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    maps = {name: s[: len(images)][:, ids[0, 0]] for name, s in scores.items()}  # each pixel shows its region's score
    limit = max(m.abs().max().item() for m in maps.values())
    fig, axes = plt.subplots(len(images), len(maps) + 1, figsize=(1.9 * (len(maps) + 1) + 0.8, 1.9 * len(images) + 0.7))
    for i, image in enumerate(images):
        axes[i, 0].imshow(image[0], cmap="gray_r")
        outline(axes[i, 0], image, ids)
        axes[i, 0].set_ylabel(f"predicted {predicted[i].item()}", fontsize=9)
        for j, (name, region_map) in enumerate(maps.items(), start=1):
            shown = axes[i, j].imshow(region_map[i], cmap=CAPTUM_COLOURS, vmin=-limit, vmax=limit)
            outline(axes[i, j], image, ids)
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
    axes[0, 0].set_title("digit, 16 regions", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Each region's score for the predicted class, one colour scale for all panels\n"
                 "(Captum's colours: green for the class, red against; outline: the digit's ink)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    bar = fig.colorbar(shown, ax=axes, fraction=0.03, pad=0.02)
    bar.set_label("region score (logit units)", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs", help="folder for the picture (default: outputs)")
    main(parser.parse_args().out)
