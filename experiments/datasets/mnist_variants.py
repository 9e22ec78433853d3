"""The CDEP paper's spurious-feature datasets (Rieger et al., ICML 2020), built from any
28x28 grey images: MNIST in the paper, Fashion-MNIST here.

- ColorMNIST: the digit is drawn in its class's colour in training and in another class's
  colour at test, so a model that learns colour fails at test; CDEP penalises the
  importance of single pixels' colour.
- DecoyMNIST (after Ross et al. 2017): a corner patch whose grey value encodes the class in
  training and contradicts it at test; CDEP penalises the corners.

Images may be uint8 (0-255) or float in [0, 1], shaped ``(N, 28, 28)`` or ``(N, 1, 28, 28)``;
the outputs are float in [0, 1]. Random choices take an optional ``torch.Generator``, so a
seeded one gives the same dataset every time.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["COLOR_PALETTE", "color_region_masks", "decoy_corner_masks", "make_color_mnist", "make_decoy_mnist"]

# ColorMNIST's class colours, classes 0..9, as float RGB in [0, 1]: shape (10, 3).
COLOR_PALETTE = torch.tensor(
    [[int(c[i : i + 2], 16) / 255.0 for i in (0, 2, 4)] for c in
     ("ff0000", "f18600", "cae300", "47d500", "00c72c", "00b88f", "0072aa", "00119c", "3f008e", "800080")]
)  # fmt: skip

PATCH = 5  # side of DecoyMNIST's corner patch
_CORNERS = [  # top left, top right, bottom left, bottom right
    (slice(0, PATCH), slice(0, PATCH)),
    (slice(0, PATCH), slice(28 - PATCH, 28)),
    (slice(28 - PATCH, 28), slice(0, PATCH)),
    (slice(28 - PATCH, 28), slice(28 - PATCH, 28)),
]


def _squeeze(images: Tensor, name: str) -> Tensor:
    """``images`` as ``(N, 28, 28)``, or an error saying what is wrong."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(images).__name__}.")
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{name} must be grey (N, 28, 28) or (N, 1, 28, 28); got shape {tuple(images.shape)}.")
    return images


def _grey(images: Tensor, name: str = "images") -> Tensor:
    """``images`` as float ``(N, 28, 28)`` in [0, 1], or an error saying what is wrong."""
    images = _squeeze(images, name)
    if not images.is_floating_point():
        return images.float() / 255.0
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            f"float {name} must be in [0, 1] (got values in [{float(images.min()):.3g}, {float(images.max()):.3g}]); "
            "divide 0-255 images by 255, and normalise after building the dataset."
        )
    return images.float()


def _classes(labels: Tensor, n: int, device: torch.device) -> Tensor:
    labels = torch.as_tensor(labels, device=device)
    if labels.shape != (n,) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor of shape ({n},), one per image; got {labels.dtype} {tuple(labels.shape)}."
        )
    if n and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"labels must be classes 0-9; got values in [{int(labels.min())}, {int(labels.max())}].")
    return labels.long()


def make_color_mnist(images: Tensor, labels: Tensor, train: bool) -> Tensor:
    """ColorMNIST: each image's grey values times a colour of :data:`COLOR_PALETTE` -- its
    class ``y``'s in training, class ``9 - y``'s at test -- so colour predicts the class
    perfectly in training and misleads at test. Returns float ``(N, 3, 28, 28)`` in [0, 1]."""
    grey = _grey(images)
    y = _classes(labels, len(grey), grey.device)
    colours = COLOR_PALETTE.to(grey.device)[y if train else 9 - y]  # (N, 3)
    return grey.unsqueeze(1) * colours[:, :, None, None]


def color_region_masks(
    train_images: Tensor, n_regions: int = 8, generator: Optional[torch.Generator] = None
) -> Tensor:
    """``n_regions`` distinct single-pixel masks ``(n_regions, 1, 28, 28)``, pixels drawn with
    probability proportional to how often they are non-zero in ``train_images`` (the grey
    images, before colouring), so the masks land where the digits are. The paper draws 8
    per batch, shared by the batch; penalising a pixel over all three channels penalises
    its colour."""
    grey = _squeeze(train_images, "train_images")
    if len(grey) == 0:
        raise ValueError("train_images is empty; pass the (grey) training images.")
    frequency = ((grey > 0).sum(0).flatten().float() / len(grey)).cpu()
    available = int((frequency > 0).sum())
    if isinstance(n_regions, bool) or not isinstance(n_regions, int) or not 1 <= n_regions <= available:
        raise ValueError(
            f"n_regions must be an integer from 1 to {available} (the pixels that are ever non-zero in "
            f"train_images); got {n_regions!r}."
        )
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("generator must be a CPU torch.Generator (the draw is on the CPU).")
    picks = torch.multinomial(frequency, n_regions, replacement=False, generator=generator)
    masks = torch.zeros(n_regions, 28 * 28)
    masks[torch.arange(n_regions), picks] = 1.0
    return masks.view(n_regions, 1, 28, 28).to(grey.device)


def make_decoy_mnist(
    images: Tensor, labels: Tensor, train: bool, generator: Optional[torch.Generator] = None
) -> Tensor:
    """DecoyMNIST: a 5x5 patch in one of the four corners (drawn per image with
    ``generator``), grey value ``255 - 25 y`` in training and ``25 y`` at test, over 255.
    Returns float ``(N, 1, 28, 28)`` in [0, 1]; the regions to penalise are
    :func:`decoy_corner_masks`."""
    grey = _grey(images)
    y = _classes(labels, len(grey), grey.device)
    out = grey.clone().unsqueeze(1)
    value = (255 - 25 * y if train else 25 * y).float() / 255.0
    device = generator.device if generator is not None else torch.device("cpu")
    corners = torch.randint(0, 4, (len(grey),), generator=generator, device=device).to(grey.device)
    for corner, (rows, cols) in enumerate(_CORNERS):
        chosen = corners == corner
        out[chosen, 0, rows, cols] = value[chosen].view(-1, 1, 1)
    return out


def decoy_corner_masks(together: bool = False) -> Tensor:
    """The four 5x5 corner patches as separate regions ``(4, 1, 28, 28)`` (top left, top
    right, bottom left, bottom right), or with ``together=True`` as one region
    ``(1, 1, 28, 28)``: one penalty on all four corners at once."""
    masks = torch.zeros(4, 1, 28, 28)
    for i, (rows, cols) in enumerate(_CORNERS):
        masks[i, 0, rows, cols] = 1.0
    return masks.amax(0, keepdim=True) if together else masks
