"""How much convolution work does a locality-aware CD skip? The bound, and what it does.

The relevant part of a spatial group differs from the other groups' only inside the
group's receptive field until the field covers the image, so the engine runs each
group's convolutions on a window around it (captum_cd/attr/windows.py). This script runs
CD on a grid of blocks (4x4 by default) of a random-weight torchvision ResNet at 224,
records at the output of every convolution the bounding box of each group's non-zero
relevant part, and reports the share of the convolution multiply-adds inside those boxes
(a bound: a window also needs its input margin, and one box size serves every group),
per stage and in all; then the convolution FLOPs of a whole CD call as torch's profiler
counts them, dense and in windows.

    python benchmarks/locality_bound.py [--model resnet50] [--block 28] [--quick]
"""

import argparse
import os
import sys
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from captum_cd.compat import declare_missing_torchvision_ops  # noqa: E402

declare_missing_torchvision_ops()

import torchvision  # noqa: E402

from captum_cd import ContextualDecomposition, grid_ids  # noqa: E402
from captum_cd.attr.masks import ids_to_masks  # noqa: E402
from captum_cd.attr.windows import spatial_windows  # noqa: E402
from torch.profiler import profile  # noqa: E402


def box_share(rel: torch.Tensor) -> float:
    """Mean over groups of (area of the box holding a group's non-zeros) / (map area).
    ``rel`` has shape (G, B, C, H, W)."""
    nonzero = rel.ne(0).flatten(1, 2).any(1)  # (G, H, W)
    rows, cols = nonzero.any(2), nonzero.any(1)
    height, width = nonzero.shape[1:]

    def extent(flags):
        idx = torch.arange(flags.shape[1], device=flags.device)
        first = torch.where(flags, idx, flags.shape[1]).min(1).values
        last = torch.where(flags, idx, -1).max(1).values
        return (last - first + 1).clamp(min=0)

    return float((extent(rows) * extent(cols)).double().mean() / (height * width))


def main(name: str, quick: bool, block: int) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    side, block = (64, 16) if quick else (224, block)
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(1, 3, side, side)
    masks = ids_to_masks(grid_ids(side, side, block))[:, 0][:, None]  # (G, 1, H, W)
    records = []  # (qualified name, multiply-adds of the full conv, share inside the boxes)

    def hook(qualified):
        def record(module, args, out):
            if hasattr(out, "rel"):
                macs = out.full[0].numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                records.append((qualified, macs, box_share(out.rel)))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:  # dense propagation: the hooks read every group's whole relevant part
        with torch.no_grad(), spatial_windows(False):
            ContextualDecomposition(model).decompose(x, masks)
    finally:
        for h in handles:
            h.remove()
    total = sum(macs for _, macs, _ in records)
    windowed = sum(macs * share for _, macs, share in records)
    grid = -(-side // block)
    print(f"{name}, 3x{side}x{side}, {grid * grid} groups ({grid}x{grid} grid of {block} px blocks): share of each group's conv work inside its boxes")
    stages = {}
    for qualified, macs, share in records:
        stage = qualified.split(".")[0] if qualified.startswith("layer") else "stem"
        s = stages.setdefault(stage, [0, 0.0])
        s[0] += macs
        s[1] += macs * share
    for stage, (macs, inside) in stages.items():
        print(f"  {stage:7s} {macs / total:6.1%} of the conv work; inside the boxes {inside / macs:6.1%}")
    print(f"  all     conv work inside the boxes: {windowed / total:.1%} (at best {total / windowed:.2f}x less conv work for the groups)")
    dense, boxes = (conv_flops(model, x, masks, enabled) for enabled in (False, True))
    print(f"  CD's convolutions (ordinary pass included), dense {dense / 1e9:.2f} GFLOP, in windows {boxes / 1e9:.2f} GFLOP: {dense / boxes:.2f}x less")


def conv_flops(model: nn.Module, x: torch.Tensor, masks: torch.Tensor, windows: bool) -> float:
    """All convolution FLOPs of one CD call, as the profiler counts them."""
    with torch.no_grad(), spatial_windows(windows), profile(with_flops=True) as prof:
        ContextualDecomposition(model).decompose(x, masks)
    return sum(event.flops for event in prof.key_averages() if "conv" in event.key)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--block", type=int, default=56, help="block side in pixels (56: a 4x4 grid)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    main(args.model, args.quick, args.block)
