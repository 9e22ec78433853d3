# %% [markdown]
# # TRIM: which frequencies and wavelet scales does an image model use?
#
# TRIM scores the coefficients of a transform of the input instead of pixels: here the
# radial frequency bands of a 2-D Fourier transform and the scales of a 2-D wavelet
# transform, for a small CNN on Fashion-MNIST (Debian's `dataset-fashion-mnist`), with CD
# and with Captum's methods through the same `TRIM` wrapper.
#
# `python tutorials/03_trim_images.py` (`--quick` for a smaller run; the test suite runs
# it). Pictures go to `outputs/tutorial03_*.png`.

# %%
import argparse
import json
import os
import time
import warnings

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from captum.attr import DeepLift, GradientShap, IntegratedGradients  # noqa: E402

from captum_cd import ContextualDecomposition, TRIM  # noqa: E402
from captum_cd.transforms import Fourier2d, radial_bands, WaveletTransform2d  # noqa: E402
from _notebook import options, show  # noqa: E402  (tutorials/_notebook.py; puts the repository root on sys.path)
from experiments.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist  # noqa: E402
from experiments.models import accuracy, small_cnn, train_classifier  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true")
parser.add_argument("--out", default="outputs")
args = options(parser)  # CAPTUM_CD_QUICK=1 sets --quick in a notebook
os.makedirs(args.out, exist_ok=True)
warnings.filterwarnings("ignore")
torch.manual_seed(0)
torch.set_num_threads(2)

# %% [markdown]
# ## A small CNN on Fashion-MNIST

# %%
images, labels = load_fashion_mnist("train")
test_images, test_labels = load_fashion_mnist("test")
n = 3000 if args.quick else 20000
x, y = images[:n].float().unsqueeze(1) / 255.0, labels[:n]
x_test, y_test = test_images[:2000].float().unsqueeze(1) / 255.0, test_labels[:2000]
model = train_classifier(small_cnn(size=28, width=16), x, y, epochs=2 if args.quick else 4)
print(f"test accuracy: {100 * accuracy(model, x_test, y_test):.1f}%")

examples = x_test[:16 if args.quick else 200]
with torch.no_grad():
    target = model(examples).argmax(1)

# %% [markdown]
# ## Frequency bands
# `Fourier2d` maps an image to its `rfft2` coefficients (real and imaginary parts in a
# trailing dimension); `radial_bands` groups them into rings of radial frequency. Every
# method scores the 8 rings for the predicted class; CD decomposes with
# `relevant = irfft2(band * coefficients)`, the gradient methods run on the model composed
# with the inverse transform, and report per ring the sum of their coefficient scores.

# %%
fourier, bands = Fourier2d((28, 28)), radial_bands((28, 28), bands=8, leading=(1,))
methods = {
    "CD": (ContextualDecomposition(model), {}),
    "IntegratedGradients": (IntegratedGradients(model), {"n_steps": 32}),
    "DeepLift": (DeepLift(model), {}),
    "GradientShap": (GradientShap(model), {"n_samples": 16}),
}


def per_group(attr, ids):
    """Mean score of each group over the examples: (groups,)."""
    flat, index = attr.flatten(1), ids.expand_as(attr).flatten(1)
    groups = int(ids.max()) + 1
    sums = torch.zeros(attr.shape[0], groups).scatter_reduce_(1, index, flat, "amax", include_self=False)
    return sums.mean(0)  # every member of a group holds the group's score: take it once


band_scores, seconds = {}, {}
for name, (method, kwargs) in methods.items():
    start = time.perf_counter()
    attr = TRIM(method, fourier).attribute(examples, target=target, feature_mask=bands, **kwargs)
    seconds[name] = time.perf_counter() - start
    band_scores[name] = per_group(attr, bands)
    print(f"{name:<20} band scores {[round(v, 2) for v in band_scores[name].tolist()]}  ({seconds[name]:.2f} s)")

# %% [markdown]
# ## Wavelet scales
# `WaveletTransform2d` is the multi-level 2-D DWT (identical to `pywt.wavedec2`, in torch,
# differentiable); its `scale_ids` group the coefficients by scale (approximation, then
# the detail subbands from coarse to fine).

# %%
wavelet = WaveletTransform2d("db2", levels=3, mode="zero")
scales = wavelet.scale_ids((28, 28), leading=(1,))
scale_scores = {}
for name, (method, kwargs) in methods.items():
    attr = TRIM(method, wavelet).attribute(examples, target=target, feature_mask=scales, **kwargs)
    scale_scores[name] = per_group(attr, scales)
    print(f"{name:<20} scale scores {[round(v, 2) for v in scale_scores[name].tolist()]}")

# %% [markdown]
# ## Pictures

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
axes[0].imshow(examples[0, 0], cmap="gray_r")
axes[0].set_title(f"an example: {FASHION_MNIST_CLASSES[target[0]]}", fontsize=9)
axes[0].set_xticks([]), axes[0].set_yticks([])
for ax, scores, xlabel in ((axes[1], band_scores, "radial frequency band (low to high)"), (axes[2], scale_scores, "wavelet group (approximation, then coarse to fine details)")):
    for name, values in scores.items():
        ax.plot(values.numpy() / (values.abs().max().item() or 1), marker="o", label=name)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("score for the predicted class (scaled)", fontsize=8)
    ax.legend(fontsize=7)
fig.tight_layout()
show(fig, os.path.join(args.out, "tutorial03_trim.png"), dpi=100)
print("picture:", os.path.join(args.out, "tutorial03_trim.png"))
with open(os.path.join(args.out, "tutorial03_results.json"), "w") as f:  # what the test suite checks
    json.dump({"band scores": {k: v.tolist() for k, v in band_scores.items()},
               "scale scores": {k: v.tolist() for k, v in scale_scores.items()}, "seconds": seconds}, f, indent=1)
