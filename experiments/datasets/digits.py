"""scikit-learn's bundled 8x8 digits as tensors (generated offline: nothing to download)."""

from typing import Tuple

import torch
from torch import Tensor


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The 1,797 digits of ``sklearn.datasets.load_digits``, split at random.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: images of shape ``(N, 1, 8, 8)`` scaled to
        [0, 1] (float32) and labels 0-9 (int64).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(labels) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]
