"""Makes PyPI's torchvision importable beside a CPU-only torch.

torchvision on PyPI is a CUDA build: beside the CPU torch its compiled operators
(``torchvision._C``: nms, roi_align, ...) do not load. torchvision copes with that, except
that ``import torchvision`` registers a fake kernel for ``torchvision::nms`` and
``torchvision::qnms`` unconditionally, which fails for operators that were never defined;
``transformers`` and ``timm`` import torchvision too and fail with it. Declaring the two
schemas first (no kernels) lets the import through: every model definition is plain
Python, and calling one of the compiled operators still raises torchvision's own error.
Nothing is declared when the compiled operators load (a CPU build of torchvision).

The test suite calls it first (``tests/conftest.py``); call it before importing
torchvision, timm or a transformers model in an environment with the same mismatch::

    >>> from captum_cd.compat import declare_missing_torchvision_ops
    >>> declare_missing_torchvision_ops()
"""

import importlib.util
import os
import sys

import torch


def declare_missing_torchvision_ops() -> bool:
    r"""Declares the schemas of ``torchvision::nms`` and ``torchvision::qnms`` (no kernels)
    if torchvision is installed, not yet imported, and its compiled operators do not load.

    Returns:
        *bool*: True if it declared them.
    """
    if "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    library = os.path.join(os.path.dirname(spec.origin), "_C.so")
    try:
        torch.ops.load_library(library)
        return False
    except (OSError, RuntimeError):
        pass
    if hasattr(torch.ops.torchvision, "nms"):
        return False
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    declare_missing_torchvision_ops.library = lib  # kept alive: dropping it removes the schemas
    return True
