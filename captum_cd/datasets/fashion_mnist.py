"""Fashion-MNIST (Xiao et al. 2017) from Debian's ``dataset-fashion-mnist`` package.

``apt-get install dataset-fashion-mnist`` puts the four IDX files (gzipped) under
``/usr/share/datasets/fashion-mnist/``; nothing is downloaded at run time.
"""

import gzip
import os
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist(split: str = "train", root: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` of the ``"train"`` (60,000) or
    ``"test"`` (10,000) split, from ``root``, ``$CAPTUM_CD_FASHION_MNIST`` or Debian's
    location."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    folder = Path(root or os.environ.get("CAPTUM_CD_FASHION_MNIST") or DEFAULT_ROOT)
    prefix = "train" if split == "train" else "t10k"
    paths = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        found = [folder / f"{prefix}-{kind}{ext}" for ext in (".gz", "")]
        found = [p for p in found if p.exists()]
        if not found:
            raise FileNotFoundError(
                f"Fashion-MNIST's {prefix}-{kind}(.gz) is not in {folder}. Install Debian's package "
                "(apt-get install dataset-fashion-mnist) or set CAPTUM_CD_FASHION_MNIST to a folder "
                "with the IDX files."
            )
        paths.append(found[0])
    images, labels = (_read_idx(p) for p in paths)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
