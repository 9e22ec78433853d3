"""float32 against float64: how far CD's scores move with the precision, beside the model's
own float32 error and CD's own sensitivity to rounding the input to float32.

For every model of the torchvision and timm zoos (tests/test_zoo_torchvision.py,
tests/test_zoo_timm.py: random weights, batch-norm statistics from 32 images, top and
bottom halves as the groups), one table row:

- model: the largest deviation of the model's float32 output from its float64 output;
- CD: the largest deviation of a relevant part in float32 from float64 (both relative to
  the output's largest magnitude), its ratio to the model's, and the relative L2 error;
- CD64 input: how far float64 CD moves when the input is perturbed by float32 rounding
  (relative 2^-24): CD's own conditioning, which no precision of the arithmetic removes.

    python benchmarks/precision.py [--quick]
"""

import argparse
import os
import sys
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from captum_cd.compat import declare_missing_torchvision_ops  # noqa: E402

declare_missing_torchvision_ops()

import _zoo  # noqa: E402
from captum_cd import ContextualDecomposition  # noqa: E402


def _halves(size: int) -> torch.Tensor:
    top = (torch.arange(size)[:, None] < size // 2).expand(size, size)
    return torch.stack([top, ~top]).to(_zoo.DT)[:, None]


def zoo(quick: bool):
    """(name, model constructor, image size) of the zoo tests, timm's if installed."""
    import test_zoo_torchvision as tv

    models = [(f"torchvision {n}", make, tv.SIZE) for n, make in tv.MODELS.items()]
    try:
        import test_zoo_timm as tm
    except Exception:  # noqa: BLE001 - timm is optional (the test extra)
        tm = None
    if tm is not None:
        models += [(f"timm {n}", lambda arch=arch, kw=kw: tm._create(arch, num_classes=5, **kw), size) for n, (arch, size, kw) in tm.MODELS.items()]
    if quick:
        keep = ("torchvision resnet18", "torchvision mobilenet_v2", "torchvision vit (2 layers, width 64)")
        models = [m for m in models if m[0] in keep]
    return models


def measure(make, size: int) -> dict:
    torch.manual_seed(0)
    model = _zoo.randomise_zero_weights(make().to(_zoo.DT))
    x = torch.randn(32, 3, size, size, dtype=_zoo.DT)
    _zoo.calibrate_batch_norm(model, x)
    x, masks = x[:2], _halves(size)
    cd = ContextualDecomposition(model)
    rel64, _ = cd.decompose(x, masks)
    with torch.no_grad():
        out64 = model(x)
        nudged = x * (1 + 2.0**-24 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype))
    rel_nudged, _ = cd.decompose(nudged, masks)
    model.float()
    rel32, _ = ContextualDecomposition(model).decompose(x.float(), masks.float())
    with torch.no_grad():
        out32 = model(x.float()).double()
    scale = float(out64.abs().max())
    return {
        "model": float((out32 - out64).abs().max()) / scale,
        "cd": float((rel32.double() - rel64).abs().max()) / scale,
        "l2": float((rel32.double() - rel64).norm() / rel64.norm()),
        "cd64 input": float((rel_nudged - rel64).abs().max()) / scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="three models")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    print("| model | model f32 error | CD f32 error | ratio | CD relative L2 | CD64 moved by input rounding |")
    print("| --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    for name, make, size in zoo(args.quick):
        m = measure(make, size)
        ratio = m["cd"] / max(m["model"], 2.0**-24)
        worst = max(worst, ratio)
        print(f"| {name} | {m['model']:.1e} | {m['cd']:.1e} | {ratio:.0f} | {m['l2']:.1e} | {m['cd64 input']:.1e} |", flush=True)
    print(f"largest ratio of CD's float32 error to the model's: {worst:.0f}")


if __name__ == "__main__":
    main()
