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


def test_awd_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippet writes wavelet.png
    snippet = next(b for b in python_blocks() if "AdaptiveWavelet(" in b)
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).eval()
    x = torch.randn(120, 64)
    scope = {"teacher": teacher, "x_batch": x[:20], "x_train": x[:100], "x_val": x[100:],
             "X": x.numpy(), "y": x[:, 10].numpy()}
    exec(snippet, scope)
    assert (tmp_path / "wavelet.png").exists() and len(scope["history"]["total"]) >= 1
    assert scope["model"].predict(x[:3].numpy()).shape == (3,)
