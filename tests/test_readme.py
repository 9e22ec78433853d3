"""The README's code runs as written."""

import os
import re

import matplotlib
import torch

from captum_cd.models import lenet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_quick_start_runs():
    matplotlib.use("Agg")
    quick_start = next(b for b in python_blocks() if "FeatureAblation(model)" in b)
    scope = {"model": lenet(), "images": torch.randn(2, 1, 28, 28), "labels": torch.tensor([3, 7])}
    exec(quick_start, scope)
    assert scope["cd"].shape == (2, 1, 28, 28) and scope["sens"].shape == (2,)


def test_first_snippet_runs():
    first = python_blocks()[0]
    ids = torch.arange(4).view(2, 2).repeat_interleave(14, 0).repeat_interleave(14, 1)[None, None]
    scope = {"model": lenet().eval(), "images": torch.randn(2, 1, 28, 28), "masks": torch.ones(3, 1, 28, 28),
             "labels": torch.tensor([1, 2]), "region_ids": ids}
    exec(first, scope)
    assert scope["relevant"].shape == (3, 2, 10)
