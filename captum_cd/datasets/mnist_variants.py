"""The CDEP paper's spurious-feature datasets, built from any 28x28 grey images
(MNIST in the paper; Fashion-MNIST here). METHODS.md section 4."""

from typing import Optional

import torch
from torch import Tensor

# Class colours of ColorMNIST, classes 0..9.
COLOR_PALETTE = torch.tensor(
    [[int(c[i : i + 2], 16) / 255.0 for i in (0, 2, 4)] for c in
     ("ff0000", "f18600", "cae300", "47d500", "00c72c", "00b88f", "0072aa", "00119c", "3f008e", "800080")]
)  # fmt: skip


def _unit(images: Tensor) -> Tensor:
    return images.float() / 255.0 if not images.is_floating_point() else images.float()


def make_color_mnist(images: Tensor, labels: Tensor, train: bool) -> Tensor:
    """Each image's grey values times a colour: the colour of its class in training, of
    class ``9 - y`` at test, so colour is a perfect but spurious cue. ``(N, 3, 28, 28)``."""
    colours = COLOR_PALETTE[labels if train else 9 - labels]  # (N, 3)
    return _unit(images).unsqueeze(1) * colours[:, :, None, None]


def color_region_masks(train_images: Tensor, n_regions: int = 8, generator: Optional[torch.Generator] = None) -> Tensor:
    """``n_regions`` single pixels, drawn with probability proportional to how often the
    pixel is non-zero in the training images; ``(n_regions, 1, 28, 28)``, shared by a
    batch (the paper draws 8 per batch). Penalising them over all channels removes colour."""
    frequency = (train_images.reshape(train_images.shape[0], -1) > 0).float().mean(0)
    picks = torch.multinomial(frequency, n_regions, replacement=False, generator=generator)
    masks = torch.zeros(n_regions, 28 * 28)
    masks[torch.arange(n_regions), picks] = 1.0
    return masks.view(n_regions, 1, 28, 28)


def make_decoy_mnist(images: Tensor, labels: Tensor, train: bool, generator: Optional[torch.Generator] = None) -> Tensor:
    """A 5x5 patch in a random corner, grey value ``255 - 25 y`` in training and ``25 y``
    at test (scaled to [0, 1]); ``(N, 1, 28, 28)``."""
    out = _unit(images).clone().unsqueeze(1)
    value = (255 - 25 * labels if train else 25 * labels).float() / 255.0
    corners = torch.randint(0, 4, (len(labels),), generator=generator)
    for corner, (rows, cols) in enumerate(_CORNERS):
        chosen = corners == corner
        out[chosen, 0, rows, cols] = value[chosen].view(-1, 1, 1)
    return out


_CORNERS = [(slice(0, 5), slice(0, 5)), (slice(0, 5), slice(23, 28)), (slice(23, 28), slice(0, 5)), (slice(23, 28), slice(23, 28))]


def decoy_corner_masks(together: bool = False) -> Tensor:
    """The four corner patches as regions ``(4, 1, 28, 28)``, or as one region
    ``(1, 1, 28, 28)`` with ``together=True``."""
    masks = torch.zeros(4, 1, 28, 28)
    for i, (rows, cols) in enumerate(_CORNERS):
        masks[i, 0, rows, cols] = 1.0
    return masks.amax(0, keepdim=True) if together else masks
