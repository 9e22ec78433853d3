"""A linear dictionary (NMF atoms, PCA components, topics) as a TRIM transform."""

import torch
from torch import Tensor

from captum_cd.attr.transforms.base import Transform


class DictionaryTransform(Transform):
    r"""Coefficients of the inputs over a dictionary of atoms.

    ``inverse(s) = s @ atoms`` (plus ``mean``), and ``forward(x)`` is the least-squares
    coefficient vector ``(x - mean) @ pinv(atoms)``. A dictionary that does not span the
    inputs leaves a residual, which TRIM adds back so the model sees exactly ``x``.

    Args:
        atoms (array or Tensor): ``(K, D)`` atoms, e.g. scikit-learn's
                    ``NMF(...).components_`` or ``PCA(...).components_``; inputs are
                    flattened to ``D`` features.
        mean (array or Tensor, optional): ``(D,)`` offset, e.g. ``PCA(...).mean_``.
        input_shape (tuple, optional): the shape of one input (without the batch), for
                    ``inverse`` to restore. Default: None (flat, ``(D,)``)
    """

    def __init__(self, atoms, mean=None, input_shape=None) -> None:
        super().__init__()
        atoms = torch.as_tensor(atoms, dtype=torch.float32)
        if atoms.ndim != 2:
            raise ValueError(f"atoms must be a (K, D) matrix; got shape {tuple(atoms.shape)}.")
        self.register_buffer("atoms", atoms)
        self.register_buffer("pinv", torch.linalg.pinv(atoms.double()).to(atoms.dtype))
        self.register_buffer("mean", torch.zeros(atoms.shape[1]) if mean is None else torch.as_tensor(mean, dtype=torch.float32))
        self.input_shape = tuple(input_shape) if input_shape is not None else (atoms.shape[1],)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.atoms.shape[1]:
            raise ValueError(f"inputs have {flat.shape[1]} features per example; the atoms have {self.atoms.shape[1]}.")
        return (flat - self.mean.to(x)) @ self.pinv.to(x)

    def inverse(self, s: Tensor) -> Tensor:
        flat = s @ self.atoms.to(s) + self.mean.to(s)
        return flat.reshape(*s.shape[:-1], *self.input_shape)
