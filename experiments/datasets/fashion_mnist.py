"""Fashion-MNIST (Xiao et al. 2017) from Debian's ``dataset-fashion-mnist`` package.

``apt-get install dataset-fashion-mnist`` puts the four IDX files, gzipped, under
``/usr/share/datasets/fashion-mnist/`` (``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``).
Nothing is downloaded at run time, and torchvision is not needed: IDX is a tiny format.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["DEFAULT_ROOT", "FASHION_MNIST_CLASSES", "load_fashion_mnist", "read_idx"]

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_INSTALL = (
    "Install Debian's package (apt-get update && apt-get install -y dataset-fashion-mnist), or set "
    "CAPTUM_CD_FASHION_MNIST (or pass root=) to a folder with the four IDX files, gzipped or not."
)


def read_idx(path: Union[str, "os.PathLike[str]"]) -> np.ndarray:
    """The unsigned-byte array of an IDX file (gzipped or not: told by its first bytes, not
    its name). Raises ValueError when the file is not a complete IDX file of bytes."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex()!r}, expected 000008xx).")
    dims = data[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if len(data) != header + int(np.prod(shape)):
        raise ValueError(
            f"{path} is truncated or corrupt: its header says shape {shape} "
            f"({int(np.prod(shape))} bytes), the file holds {len(data) - header}."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"Fashion-MNIST's {name}(.gz) is not in {folder}. {_INSTALL}")


def load_fashion_mnist(
    split: str = "train", root: Optional[Union[str, "os.PathLike[str]"]] = None
) -> Tuple[Tensor, Tensor]:
    """``(images, labels)`` of the ``"train"`` (60,000) or ``"test"`` (10,000) split:
    images uint8 ``(N, 28, 28)`` (0 background, 255 ink), labels int64 ``(N,)`` in 0-9
    (names in :data:`FASHION_MNIST_CLASSES`).

    Read from ``root``, else ``$CAPTUM_CD_FASHION_MNIST``, else Debian's
    ``/usr/share/datasets/fashion-mnist``; the files keep their original names
    (``train-*`` / ``t10k-*``), gzipped or not.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    folder = Path(root if root is not None else os.environ.get("CAPTUM_CD_FASHION_MNIST") or DEFAULT_ROOT)
    prefix = "train" if split == "train" else "t10k"
    image_path = _find(folder, f"{prefix}-images-idx3-ubyte")
    label_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{image_path} and {label_path} do not hold (N, 28, 28) images and N labels "
            f"(shapes {images.shape} and {labels.shape})."
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
