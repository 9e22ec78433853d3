# %% [markdown]
# # TRIM: which frequencies and wavelet scales does an image model use?
#
# TRIM scores the coefficients of a transform of the input instead of pixels: here the
# radial frequency bands of a 2-D Fourier transform and the scales of a 2-D wavelet
# transform, for a small CNN on Fashion-MNIST (Debian's `dataset-fashion-mnist`), with CD
# and with Captum's methods through the same `TRIM` wrapper.
#
# Run it in Jupyter, or as a script (`python 03_trim_images.py`); `CAPTUM_CD_QUICK=1` makes a
# shorter run (the test suite and the documentation site use it), `CAPTUM_CD_OUT` says
# where pictures and results go (default `outputs/`).

# %%
import gzip
import json
import os
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import DeepLift, GradientShap, IntegratedGradients
from IPython.display import display
from torch import nn

from captum_cd import ContextualDecomposition, TRIM
from captum_cd.transforms import Fourier2d, radial_bands, WaveletTransform2d

QUICK = os.environ.get("CAPTUM_CD_QUICK") == "1"  # a shorter run: the test suite and the documentation site use it
OUT = os.environ.get("CAPTUM_CD_OUT", "outputs")  # pictures and results are written here
os.makedirs(OUT, exist_ok=True)
warnings.filterwarnings("ignore")
torch.manual_seed(0)
torch.set_num_threads(2)


def show(figure, path, **savefig_kwargs):
    """Writes the figure to ``path`` and shows it (inline in a notebook)."""
    figure.savefig(path, **savefig_kwargs)
    display(figure)
    plt.close(figure)  # shown once



# %% [markdown]
# ## Data and a training loop
# Plain PyTorch, written out here so that the notebook runs from any folder.

# %%
# Debian's dataset-fashion-mnist installs the four IDX files here (or set CAPTUM_CD_FASHION_MNIST).
FASHION_MNIST = os.environ.get("CAPTUM_CD_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def load_fashion_mnist(split):
    """``(images, labels)``: uint8 images (N, 28, 28) and their classes, from the gzipped
    IDX files (a 4-byte magic number whose last byte is the number of dimensions, then
    each dimension's size as a 4-byte big-endian integer, then the bytes)."""
    prefix = "train" if split == "train" else "t10k"
    arrays = []
    for kind in ("images-idx3", "labels-idx1"):
        with gzip.open(os.path.join(FASHION_MNIST, f"{prefix}-{kind}-ubyte.gz")) as f:
            data = f.read()
        shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
        arrays.append(torch.from_numpy(np.frombuffer(data, np.uint8, offset=4 + 4 * len(shape)).reshape(shape).copy()))
    return arrays[0], arrays[1].long()


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
# ## A small CNN on Fashion-MNIST

# %%
images, labels = load_fashion_mnist("train")
test_images, test_labels = load_fashion_mnist("test")
n = 3000 if QUICK else 20000
x, y = images[:n].float().unsqueeze(1) / 255.0, labels[:n]
x_test, y_test = test_images[:2000].float().unsqueeze(1) / 255.0, test_labels[:2000]
model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
)  # fmt: skip
model = train_classifier(model, x, y, epochs=2 if QUICK else 4)
print(f"test accuracy: {100 * accuracy(model, x_test, y_test):.1f}%")

examples = x_test[:16 if QUICK else 200]
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
show(fig, os.path.join(OUT, "tutorial03_trim.png"), dpi=100)
print("picture:", os.path.join(OUT, "tutorial03_trim.png"))
with open(os.path.join(OUT, "tutorial03_results.json"), "w") as f:  # what the test suite checks
    json.dump({"band scores": {k: v.tolist() for k, v in band_scores.items()},
               "scale scores": {k: v.tolist() for k, v in scale_scores.items()}, "seconds": seconds}, f, indent=1)
