r"""Spatial windows: the relevant part of a group of nearby pixels is 0 away from it.

A convolution, batch norm, activation or max pool computes each output position from a
neighbourhood of its input, so the relevant part of a local group (a block, a superpixel,
one pixel) is non-zero only inside the group's receptive field, until that field covers
the map. A *windowed* relevant part keeps, for each group, a box of the ``(H, W)`` map:
shape ``(G, B, C, h, w)``, one box size for every group, group ``g``'s box starting at
row ``tops[g]`` and column ``lefts[g]``; outside its box the group's part is exactly 0.
It is 0 there at the input, and every window-aware step keeps it so: a convolution
without its bias maps zeros to zeros, a bias split gives a part that is 0 nothing, the
elementwise steps (the ReLU and Shapley forms, scaling by a constant) map a part that is
0 to 0, and sums and max pools of zeros are zeros. Window-aware rules (2-D convolution,
batch norm, elementwise steps, max pooling, residual sums) work on the boxes alone, so a
group costs the work of its box; any other rule reads the dense relevant part, so
windows change the cost, never the values (up to rounding).

This module is the geometry: where boxes lie, how a layer moves them, and moving values
in and out of them. :class:`~captum_cd.attr.decomposition.Decomposition` holds the boxes.
"""

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

# When windows pay (measured on LeNet at 28x28 and ResNets at 224, see
# benchmarks/cd_speed.py and scale_speed.py): gathering into boxes and out of them has a
# cost of its own, so there must be a few groups; the boxes grow with every layer's receptive field, so a box
# grown by MARGIN pixels each side must still cover at most START_SHARE of the map. A
# layer's output goes dense once its boxes cover more than DENSE_SHARE: gathering into
# and out of boxes then costs more than the work they save.
MIN_GROUPS = 4
MARGIN = 8
START_SHARE = 0.5
DENSE_SHARE = 0.6


Pair = Tuple[int, int]
_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("captum_cd_spatial_windows", default=True)


@contextlib.contextmanager
def spatial_windows(enabled: bool) -> Iterator[None]:
    r"""Whether local groups of pixels are propagated in windows, as by default, or
    dense: within this block, in this thread only. The values are the same either way
    (up to rounding); the speed benchmarks measure the difference."""
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


@dataclass(frozen=True)
class Window:
    """Per group, the box of a 2-D map outside which its relevant part is 0."""

    tops: Tensor  # (G,) int64 on the CPU: the geometry is bookkeeping, never a kernel
    lefts: Tensor
    size: Tuple[int, int]  # (h, w), the same for every group
    map_size: Tuple[int, int]  # (H, W)

    @property
    def share(self) -> float:
        return (self.size[0] * self.size[1]) / (self.map_size[0] * self.map_size[1])

    def same_as(self, other: "Window") -> bool:
        return self is other or (self.size == other.size and torch.equal(self.tops, other.tops) and torch.equal(self.lefts, other.lefts))

    def index_in(self, tops: Tensor, lefts: Tensor, width: int, device: torch.device) -> Tensor:
        """``(G, h*w)``: where each box element lies in a ``width``-wide region whose
        per-group origin is ``(tops, lefts)`` (the map itself: zeros and the map width)."""
        rows = (self.tops - tops)[:, None] + torch.arange(self.size[0])
        cols = (self.lefts - lefts)[:, None] + torch.arange(self.size[1])
        return (rows[:, :, None] * width + cols[:, None, :]).flatten(1).to(device)


def find_window(rel: Tensor) -> Optional[Window]:
    """The boxes holding each group's non-zeros, for relevant parts ``(G, B, C, H, W)``;
    None where windows would not pay (another shape, few groups, or large boxes)."""
    if rel.ndim != 5 or rel.shape[0] < MIN_GROUPS or not _ENABLED.get():
        return None
    nonzero = rel.detach().ne(0).flatten(1, 2).any(1)  # (G, H, W)
    height, width = nonzero.shape[1:]
    first_row, last_row = _first_last(nonzero.any(2))
    first_col, last_col = _first_last(nonzero.any(1))
    h = max(int((last_row - first_row).max()) + 1, 1)
    w = max(int((last_col - first_col).max()) + 1, 1)
    if (h + 2 * MARGIN) * (w + 2 * MARGIN) > START_SHARE * height * width:
        return None
    tops = first_row.cpu().clamp(0, height - h)
    lefts = first_col.cpu().clamp(0, width - w)
    return Window(tops, lefts, (h, w), (height, width))


def _first_last(hits: Tensor) -> Tuple[Tensor, Tensor]:
    """First and last True along the last dim of ``hits`` (G, N); an empty row gives (0, 0)."""
    n = hits.shape[-1]
    position = torch.arange(n, device=hits.device)
    first = torch.where(hits, position, n).amin(-1)
    last = torch.where(hits, position, -1).amax(-1)
    empty = first == n
    return first.masked_fill(empty, 0), last.masked_fill(empty, 0)


def spans_map(t: object) -> bool:
    """Whether a tensor broadcast against ``(B, C, H, W)`` varies over the map."""
    return isinstance(t, Tensor) and t.ndim > 0 and any(n != 1 for n in t.shape[-2:])


def crop(t: object, window: Window) -> object:
    """Each group's box of a tensor that broadcasts against the full ``(B, C, H, W)``
    activation: ``(G, b, c, h, w)``. Anything without the map's extent (a per-channel
    bias, a number) broadcasts as it is."""
    if not spans_map(t):
        return t
    t = t.reshape((1,) * (4 - t.ndim) + tuple(t.shape))
    t = t.expand(*t.shape[:-2], *window.map_size)
    return take(t.unsqueeze(0).expand(len(window.tops), *t.shape), window)


def take(values: Tensor, window: Window, origin: Optional[Window] = None) -> Tensor:
    """Group ``g``'s box of ``values[g]`` (``(G, b, c, H', W')``), where ``values`` holds
    the map, or the boxes of ``origin`` (which then contain the boxes of ``window``)."""
    groups, b, c = values.shape[:3]
    tops, lefts = (origin.tops, origin.lefts) if origin is not None else (torch.zeros_like(window.tops),) * 2
    index = window.index_in(tops, lefts, values.shape[-1], values.device)
    flat = values.reshape(groups, b, c, -1)
    picked = flat.gather(-1, index[:, None, None, :].expand(groups, b, c, -1))
    return picked.view(groups, b, c, *window.size)


def place(boxes: Tensor, window: Window, into: Optional[Window] = None) -> Tensor:
    """The boxes written into the map (dense parts ``(G, B, C, H, W)``), or into the
    (larger) boxes ``into``; zeros elsewhere."""
    groups, b, c = boxes.shape[:3]
    if into is None:
        tops, lefts, size = torch.zeros_like(window.tops), torch.zeros_like(window.lefts), window.map_size
    else:
        tops, lefts, size = into.tops, into.lefts, into.size
    base = boxes.new_zeros(groups, b, c, size[0] * size[1])
    index = window.index_in(tops, lefts, size[1], boxes.device)
    placed = base.scatter(-1, index[:, None, None, :].expand(groups, b, c, -1), boxes.flatten(-2))
    return placed.view(groups, b, c, *size)


def union(a: Window, b: Window) -> Window:
    """Boxes that contain both ``a``'s and ``b``'s, one size for every group."""
    if a.same_as(b):
        return a
    starts, ends = [], []
    for dim, (ta, tb) in enumerate(((a.tops, b.tops), (a.lefts, b.lefts))):
        start = torch.minimum(ta, tb)
        ends.append(torch.maximum(ta + a.size[dim], tb + b.size[dim]))
        starts.append(start)
    size = tuple(int((e - s).max()) for s, e in zip(starts, ends))
    tops, lefts = (s.clamp(max=n - k) for s, n, k in zip(starts, a.map_size, size))
    return Window(tops, lefts, size, a.map_size)


def slide(window: Window, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair, out_size: Pair) -> Tuple[Window, list]:
    """The output boxes of a 2-D sliding layer (convolution, pooling; each argument a
    pair over rows and columns), and for each dim the input each box needs:
    ``(start within the input box, length)`` per group, zeros beyond the input box."""
    starts, sizes, needs = [], [], []
    for dim, origin in enumerate((window.tops, window.lefts)):
        n, n_out = window.size[dim], out_size[dim]
        k, s, p, d = kernel[dim], stride[dim], padding[dim], dilation[dim]
        # Output i reads input rows s*i - p + d*j, j < k: those touching [origin, origin + n).
        first = -torch.div(-(origin + p - d * (k - 1)), s, rounding_mode="floor")
        last = torch.div(origin + n - 1 + p, s, rounding_mode="floor")
        first, last = first.clamp(0, n_out - 1), last.clamp(0, n_out - 1)
        size = max(int((last - first).max()) + 1, 1)
        start = first.clamp(max=n_out - size)
        starts.append(start)
        sizes.append(size)
        needs.append((s * start - p - origin, s * (size - 1) + d * (k - 1) + 1))
    return Window(starts[0], starts[1], tuple(sizes), tuple(out_size)), needs


def inputs_for(boxes: Tensor, window: Window, needs: list) -> Tensor:
    """For each group the input region a sliding layer needs, ``(G, B, C, L_h, L_w)``:
    taken from its box, with zeros where the region leaves the box (the map's own zero
    padding there, or the group's zero relevant part)."""
    pads, tops, lefts = [], None, None
    for dim, (offset, length) in enumerate(needs):
        low = max(0, -int(offset.min()))
        high = max(0, int((offset + length).max()) - window.size[dim])
        pads.append((low, high))
        if dim == 0:
            tops = offset + low
        else:
            lefts = offset + low
    padded = F.pad(boxes, (*pads[1], *pads[0]))
    region = Window(tops, lefts, (needs[0][1], needs[1][1]), padded.shape[-2:])
    return take(padded, region)


def pool_positions(indices: Tensor, window: Window, out_window: Window) -> Tuple[Tensor, Tensor]:
    """A max pool's winners (flat indices into the input map, ``(B, C, H', W')``) as flat
    indices into each group's input box, ``(G, B, C, h', w')``, and where the winner lies
    inside the box (elsewhere the group's part is zero)."""
    at = crop(indices, out_window)
    width = window.map_size[1]
    tops = window.tops.to(at.device).view(-1, 1, 1, 1, 1)
    lefts = window.lefts.to(at.device).view(-1, 1, 1, 1, 1)
    rows, cols = torch.div(at, width, rounding_mode="floor") - tops, at % width - lefts
    h, w = window.size
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1), inside
