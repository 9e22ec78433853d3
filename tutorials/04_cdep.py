# %% [markdown]
# # CDEP: teach a model to ignore a spurious feature
#
# A decoy: Fashion-MNIST images get a 5x5 grey patch in a random corner whose shade
# gives away the class in training (255 - 25y) and lies at test (25y). A CNN trained as
# usual reads the patch. `CDEPRegularizer` adds a loss term that pushes the CD
# contribution of the corners toward zero, in an ordinary PyTorch loop.
#
# Run it in Jupyter, or as a script (`python 04_cdep.py`); `CAPTUM_CD_QUICK=1` makes a
# shorter run (the test suite and the documentation site use it), `CAPTUM_CD_OUT` says
# where pictures and results go (default `outputs/`).
# `benchmarks/cdep_experiments.py` runs the paper's experiments properly (seeds, weights
# chosen on a validation split, RRR and Expected Gradients beside CDEP).

# %%
import gzip
import json
import os
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from captum_cd import CDEPRegularizer

QUICK = os.environ.get("CAPTUM_CD_QUICK") == "1"  # a shorter run: the test suite and the documentation site use it
OUT = os.environ.get("CAPTUM_CD_OUT", "outputs")  # pictures and results are written here
os.makedirs(OUT, exist_ok=True)
warnings.filterwarnings("ignore")
torch.manual_seed(0)
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)



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




CORNERS = [(slice(0, 5), slice(0, 5)), (slice(0, 5), slice(23, 28)), (slice(23, 28), slice(0, 5)), (slice(23, 28), slice(23, 28))]


def make_decoy(images, labels, train, generator):
    """A 5x5 patch in a random corner of each image, grey 255 - 25y in training, 25y at
    test: ``(N, 1, 28, 28)`` in [0, 1]."""
    out = images.float().div(255).unsqueeze(1)
    value = (255 - 25 * labels if train else 25 * labels).float() / 255.0
    corners = torch.randint(0, 4, (len(images),), generator=generator)
    for corner, (rows, cols) in enumerate(CORNERS):
        chosen = corners == corner
        out[chosen, 0, rows, cols] = value[chosen].view(-1, 1, 1)
    return out


def lenet():
    """A LeNet-sized CNN for 28x28 images."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def accuracy(model, inputs, labels):
    with torch.no_grad():
        return (model(inputs).argmax(1) == labels).float().mean().item()


# %%
images, labels = load_fashion_mnist("train")
test_images, test_labels = load_fashion_mnist("test")
n = 2000 if QUICK else 12000
x_train = make_decoy(images[:n], labels[:n], train=True, generator=g)
x_test = make_decoy(test_images[:2000], test_labels[:2000], train=False, generator=g)
y_train, y_test = labels[:n], test_labels[:2000]
corners = torch.zeros(4, 1, 28, 28)  # the regions the model must not use: one a corner
for i, (rows, cols) in enumerate(CORNERS):
    corners[i, 0, rows, cols] = 1.0

# %% [markdown]
# ## The training loop
# The regulariser is a callable: `reg(x, masks, target=y)` returns `weight * loss`, a scalar
# with its graph. `output_and_penalty` also returns the model's logits from the same
# pass, so the prediction loss and the penalty share one forward pass.

# %%


def train(weight: float, epochs: int):
    torch.manual_seed(0)
    model = lenet()
    reg = CDEPRegularizer(model, weight=weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in torch.randperm(n, generator=g).split(64):
            optimizer.zero_grad()
            logits, penalty = reg.output_and_penalty(x_train[batch], corners, target=y_train[batch])
            (F.cross_entropy(logits, y_train[batch]) + penalty).backward()
            optimizer.step()
    return model.eval(), (time.perf_counter() - start) / epochs


epochs = 1 if QUICK else 2
# The explanation loss of the paper, sigmoid(beta - gamma) averaged over classes: how
# much of each logit the corners carry relative to the rest (0.5 = as much).
results = {}
for weight in (0.0, 1.0):
    model, seconds = train(weight, epochs)
    with torch.no_grad():
        corner_loss = CDEPRegularizer(model, weight=1.0)(x_test[:200], corners).item() / len(corners)
    results[weight] = {
        "train accuracy": accuracy(model, x_train[:2000], y_train[:2000]),
        "test accuracy": accuracy(model, x_test, y_test),  # with the lying patch
        "corner loss": corner_loss,
        "seconds per epoch": seconds,
    }
    print(
        f"weight {weight:>4}: train accuracy {results[weight]['train accuracy']:.3f}, "
        f"test accuracy (lying patch) {results[weight]['test accuracy']:.3f}, "
        f"explanation loss of a corner {corner_loss:.3f}, {seconds:.1f} s / epoch"
    )
with open(os.path.join(OUT, "tutorial04_results.json"), "w") as f:
    json.dump(results, f, indent=1)  # what the test suite checks
