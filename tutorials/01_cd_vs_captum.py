# %% [markdown]
# # Contextual decomposition beside Captum's attribution methods
#
# This tutorial puts `captum_cd.ContextualDecomposition` (CD) next to Captum's
# IntegratedGradients, DeepLift, GradientShap (SHAP) and FeatureAblation on a small CNN
# trained on scikit-learn's 8x8 digits:
#
# 1. **single pixels**: every method scores every pixel;
# 2. **groups**: every method scores 2x2 blocks of pixels. CD and FeatureAblation score a
#    group directly; the gradient methods can only sum their pixels' scores;
# 3. **interactions**: what CD gives that sums of pixel scores cannot;
# 4. **metrics**: `captum.metrics.infidelity` and `sensitivity_max` for each method, and
#    what each costs.
#
# Run it in Jupyter, or as a script (`python 01_cd_vs_captum.py`); `CAPTUM_CD_QUICK=1` makes a
# shorter run (the test suite and the documentation site use it), `CAPTUM_CD_OUT` says
# where pictures and results go (default `outputs/`).

# %%
import json
import os
import time
import warnings

import matplotlib.pyplot as plt
import sklearn.datasets
import torch
import torch.nn.functional as F
from captum.attr import DeepLift, FeatureAblation, GradientShap, IntegratedGradients
from captum.metrics import infidelity, sensitivity_max
from IPython.display import display
from matplotlib.colors import LinearSegmentedColormap
from torch import nn

from captum_cd import ContextualDecomposition, grid_ids, ids_to_masks

QUICK = os.environ.get("CAPTUM_CD_QUICK") == "1"  # a shorter run: the test suite and the documentation site use it
OUT = os.environ.get("CAPTUM_CD_OUT", "outputs")  # pictures and results are written here
os.makedirs(OUT, exist_ok=True)
warnings.filterwarnings("ignore", module="captum")
torch.manual_seed(0)
torch.set_num_threads(2)


def show(figure, path, **savefig_kwargs):
    """Writes the figure to ``path`` and shows it (inline in a notebook)."""
    figure.savefig(path, **savefig_kwargs)
    display(figure)
    plt.close(figure)  # shown once


# %% [markdown]
# ## Data and a training loop
# Plain PyTorch and scikit-learn, written out here so that the notebook runs from any folder.

# %%
def load_digits():
    """scikit-learn's 1,797 8x8 digits (shipped with it), scaled to [0, 1], split at random
    into 1,348 training and 449 test images: ``(x_train, y_train, x_test, y_test)``."""
    digits = sklearn.datasets.load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    test, train = order[:449], order[449:]
    return images[train], labels[train], images[test], labels[test]


def train_classifier(model, inputs, labels, epochs, batch_size=64, lr=1e-3):
    """Adam on cross-entropy, shuffled mini-batches; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(batch_size):
            optimizer.zero_grad()
            F.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model, inputs, labels):
    with torch.no_grad():
        return (model(inputs).argmax(1) == labels).float().mean().item()


# %% [markdown]
# ## A small CNN on digits
# scikit-learn's 8x8 digits (they ship with it: nothing to download), and two
# conv-ReLU-max-pool blocks with a linear layer, trained for a few seconds. ReLU and
# pooling are modules, not functions in `forward`: Captum's DeepLift needs that (CD works
# either way).

# %%
x_train, y_train, x_test, y_test = load_digits()
model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 2 * 2, 10),
)  # fmt: skip
model = train_classifier(model, x_train, y_train, epochs=15)
print(f"test accuracy: {accuracy(model, x_test, y_test):.3f}")

n_images = 8 if QUICK else 64
images = x_test[:n_images]
with torch.no_grad():
    target = model(images).argmax(1)

# %% [markdown]
# ## 1. Single pixels
# Every method in Captum's calling convention: `attribute(inputs, target=...)` returns a
# tensor shaped like the inputs. For CD without a `feature_mask` every pixel is its own
# group; the 64 groups go through the model in one batched pass.

# %%
baselines = torch.cat([torch.zeros(1, 1, 8, 8), x_train[:10]])  # SHAP's reference distribution
methods = {
    "CD": (ContextualDecomposition(model), {}),
    "IntegratedGradients": (IntegratedGradients(model), {"n_steps": 50}),
    "DeepLift": (DeepLift(model), {}),
    "GradientShap": (GradientShap(model), {"baselines": baselines, "n_samples": 20}),
    "FeatureAblation": (FeatureAblation(model), {}),
}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result.detach(), time.perf_counter() - start


pixel_attr, pixel_seconds = {}, {}
for name, (method, kwargs) in methods.items():
    pixel_attr[name], pixel_seconds[name] = timed(lambda: method.attribute(images, target=target, **kwargs))


CAPTUM_COLOURS = LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"])  # captum.attr.visualization's


def compare(attributions, title, path, rows=3):
    names = list(attributions)
    fig, axes = plt.subplots(rows, len(names) + 1, figsize=(1.8 * (len(names) + 1), 1.9 * rows))
    for i in range(rows):
        axes[i, 0].imshow(images[i, 0], cmap="gray_r")
        axes[i, 0].set_title(f"class {target[i].item()}", fontsize=8)
        for j, name in enumerate(names, start=1):
            a = attributions[name][i, 0]
            limit = a.abs().max().item() or 1.0
            axes[i, j].imshow(a, cmap=CAPTUM_COLOURS, vmin=-limit, vmax=limit)
            axes[i, j].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    show(fig, path, dpi=90)


compare(pixel_attr, "Single pixels (green: for the predicted class, red: against; each panel on its own scale)", os.path.join(OUT, "tutorial01_pixels.png"))

# %% [markdown]
# ## 2. Groups: 2x2 blocks
# A Captum `feature_mask` of integer ids defines the groups. CD and FeatureAblation score
# each block as a whole (every pixel receives its block's score); the gradient methods
# have no notion of a group, so we sum their pixel scores within each block.

# %%
ids = grid_ids(8, 8, 2)  # (1, 1, 8, 8): ids 0..15, one per 2x2 block


def block_sums(attr):
    """Sum within each block, then give every pixel its block's sum."""
    sums = torch.zeros(attr.shape[0], 16).scatter_add_(1, ids.flatten().expand(attr.shape[0], -1), attr.flatten(1))
    return sums[:, ids.flatten()].view_as(attr)


group_attr, group_seconds = {}, {}
for name, (method, kwargs) in methods.items():
    if name in ("CD", "FeatureAblation"):
        group_attr[name], group_seconds[name] = timed(lambda: method.attribute(images, target=target, feature_mask=ids, **kwargs))
    else:  # a gradient method's group score is the sum of its pixel scores
        group_attr[name], group_seconds[name] = block_sums(pixel_attr[name]), pixel_seconds[name]

compare(group_attr, "2x2 blocks (green: for the predicted class, red: against; each panel on its own scale)", os.path.join(OUT, "tutorial01_groups.png"))

# %% [markdown]
# ## 3. What a group score has that a sum does not: interactions
# CD scores a group as a whole, so the CD of a block differs from the sum of its pixels'
# CD scores by the interactions inside the block. `interactions` computes
# `CD(A u B) - CD(A) - CD(B)` for many pairs at once; here, every pair of horizontally
# adjacent blocks of the first image.

# %%
cd = methods["CD"][0]
block_masks = ids_to_masks(ids)  # (16, 1, 8, 8): one mask per block
left = [b for b in range(16) if b % 4 < 3]
pairs_a, pairs_b = block_masks[left], block_masks[[b + 1 for b in left]]
with torch.no_grad():
    inter = cd.interactions(images[:1], pairs_a, pairs_b, target=target[:1])[:, 0]
within_block = group_attr["CD"][0, 0, ::2, ::2].flatten() - block_sums(pixel_attr["CD"])[0, 0, ::2, ::2].flatten()
print(f"largest |interaction| between adjacent blocks: {inter.abs().max().item():.3f}")
print(f"largest |CD(block) - sum of its pixels' CD|:   {within_block.abs().max().item():.3f}")

# %% [markdown]
# ## 4. Faithfulness and stability: infidelity and max-sensitivity
# `infidelity` compares the attributions with the output change under random
# perturbations (lower is better). For groups, the perturbation is constant within each
# block and the block's score is shared by its pixels, so `I . attributions` is the sum
# over blocks of perturbation times block score. `sensitivity_max` measures how much
# attributions change under small input noise (lower is more stable).

# %%
n_perturb = 5 if QUICK else 50


def pixel_noise(inputs):
    noise = torch.randn_like(inputs) * 0.1
    return noise, inputs - noise


def block_noise(inputs):
    noise = (torch.randn(inputs.shape[0], 16) * 0.1)[:, ids.flatten()].view_as(inputs)
    return noise, inputs - noise


rows = []
for name, (method, kwargs) in methods.items():
    pixel_inf = infidelity(model, pixel_noise, images, pixel_attr[name], target=target, n_perturb_samples=n_perturb)
    group_inf = infidelity(model, block_noise, images, group_attr[name] / 4, target=target, n_perturb_samples=n_perturb)
    sens = sensitivity_max(method.attribute, images[:4], target=target[:4], n_perturb_samples=3 if QUICK else 10, **kwargs)
    rows.append((name, pixel_inf.mean().item(), group_inf.mean().item(), sens.mean().item(), pixel_seconds[name], group_seconds[name]))

header = f"{'method':<20}{'infid. pixels':>14}{'infid. blocks':>14}{'max-sens.':>11}{'s pixels':>10}{'s blocks':>10}"
print(header)
for name, pi, gi, se, ps, gs in rows:
    print(f"{name:<20}{pi:>14.4f}{gi:>14.4f}{se:>11.3f}{ps:>10.3f}{gs:>10.3f}")
with open(os.path.join(OUT, "tutorial01_results.json"), "w") as f:  # what the test suite checks
    keys = ("infidelity pixels", "infidelity blocks", "max-sensitivity", "seconds pixels", "seconds blocks")
    json.dump({row[0]: dict(zip(keys, row[1:])) for row in rows}, f, indent=1)

# %% [markdown]
# Reading the table: on single pixels the gradient methods are the natural tool; on
# groups, CD and FeatureAblation score the group itself, and CD does it in one batched
# pass, while FeatureAblation needs one forward pass per group. Timings are for this
# small model on 2 CPU threads and vary run to run; `benchmarks/cd_speed.py` measures
# the costs properly (medians, ratios to a forward pass).
