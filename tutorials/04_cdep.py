# %% [markdown]
# # CDEP: teach a model to ignore a spurious feature
#
# A decoy: Fashion-MNIST images get a 5x5 grey patch in a random corner whose shade
# gives away the class in training (255 - 25y) and lies at test (25y). A CNN trained as
# usual reads the patch. `CDEPRegularizer` adds a loss term that pushes the CD
# contribution of the corners toward zero, in an ordinary PyTorch loop.
#
# `python tutorials/04_cdep.py` (`--quick` for a smaller run; the test suite runs it).
# `benchmarks/cdep_experiments.py` runs the paper's experiments properly (seeds, weights
# chosen on a validation split, RRR and Expected Gradients beside CDEP).

# %%
import argparse
import json
import os
import time
import warnings

import torch
import torch.nn.functional as F

from captum_cd import CDEPRegularizer
from _notebook import options  # noqa: E402  (tutorials/_notebook.py; puts the repository root on sys.path)
from experiments.datasets import decoy_corner_masks, load_fashion_mnist, make_decoy_mnist
from experiments.models import accuracy, lenet

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true")
parser.add_argument("--out", default="outputs", help="folder for tutorial04_results.json")
args = options(parser)  # CAPTUM_CD_QUICK=1 sets --quick in a notebook
warnings.filterwarnings("ignore")
torch.manual_seed(0)
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)

# %%
images, labels = load_fashion_mnist("train")
test_images, test_labels = load_fashion_mnist("test")
n = 2000 if args.quick else 12000
x_train = make_decoy_mnist(images[:n], labels[:n], train=True, generator=g)
x_test = make_decoy_mnist(test_images[:2000], test_labels[:2000], train=False, generator=g)
y_train, y_test = labels[:n], test_labels[:2000]
corners = decoy_corner_masks()  # (4, 1, 28, 28): the regions the model must not use

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


epochs = 1 if args.quick else 2
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
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "tutorial04_results.json"), "w") as f:
    json.dump(results, f, indent=1)  # what the test suite checks
