"""Offline data helpers for the tutorials, benchmarks and tests: nothing is downloaded."""

from captum_cd.datasets.digits import load_digits
from captum_cd.datasets.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from captum_cd.datasets.mnist_variants import (
    COLOR_PALETTE,
    color_region_masks,
    decoy_corner_masks,
    make_color_mnist,
    make_decoy_mnist,
)
from captum_cd.datasets.sst import encode, find_sst_root, load_sst, parse_tree, SSTExample, Vocab

__all__ = [
    "COLOR_PALETTE",
    "FASHION_MNIST_CLASSES",
    "SSTExample",
    "Vocab",
    "color_region_masks",
    "decoy_corner_masks",
    "encode",
    "find_sst_root",
    "load_digits",
    "load_fashion_mnist",
    "load_sst",
    "make_color_mnist",
    "make_decoy_mnist",
    "parse_tree",
]
