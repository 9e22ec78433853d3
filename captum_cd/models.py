"""Small reference models of the papers' experiments, and a plain training loop.

They are ordinary ``nn.Module``s written the way people write them (functional ReLUs
and pooling in ``forward``); nothing in the library depends on them.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn, Tensor


# The CNNs use ReLU and pooling *modules*: Captum's DeepLift needs them to be correct,
# and the comparisons with it use these models. CD works either way.


def small_cnn(in_channels: int = 1, size: int = 8, classes: int = 10, width: int = 16) -> nn.Sequential:
    """Two conv-ReLU-max-pool blocks and a linear head, for small images
    (scikit-learn's 8x8 digits by default)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * (size // 4) ** 2, classes),
    )  # fmt: skip


def lenet(in_channels: int = 1, classes: int = 10) -> nn.Sequential:
    """LeNet-sized CNN for 28x28 inputs: conv 32 - pool - conv 64 - pool - fc 128 - fc 10
    (the CDEP paper's architecture, and the benchmarks')."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, classes),
    )  # fmt: skip


def train_classifier(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: Optional[int] = 0,
) -> nn.Module:
    """Adam on cross-entropy, shuffled mini-batches; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(batch_size):
            optimizer.zero_grad()
            F.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, inputs: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return (model(inputs).argmax(1) == labels).float().mean().item()
