"""TRIM: attributions in a transformed space (Singh et al. 2020; METHODS.md section 3)."""

import copy
import inspect
from typing import Any, Optional

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import nn, Tensor

from captum_cd.attr._captum_compat import _format_additional_forward_args, TargetType
from captum_cd.attr.contextual_decomposition import ContextualDecomposition, target_scores
from captum_cd.attr.transforms.base import Transform


class TransformedModel(nn.Module):
    r"""The model as a function of the coefficients: ``f(T^-1(s) + residual)``.

    The residual ``x - T^-1(T(x))`` (detached) is passed as the first additional forward
    argument, so Captum expands it with the inputs however a method batches them, and
    the model sees exactly ``x`` at ``s = T(x)`` even for transforms that are not exactly
    invertible, while gradients flow through ``T^-1``.
    """

    def __init__(self, model: nn.Module, transform: Transform) -> None:
        super().__init__()
        self.model, self.transform = model, transform

    def forward(self, coefficients: Tensor, residual: Tensor, *args: Any) -> Tensor:
        return self.model(self.transform.inverse(coefficients) + residual, *args)


class TRIM(Attribution):
    r"""
    Transformation importance: attributions to the coefficients ``s = T(x)`` of a
    transform of the input (frequency bands, wavelet coefficients, dictionary atoms)
    instead of to raw features, ``TRIM(s) = attr(f o T^-1; s)``.

    ``method`` is a :class:`~captum_cd.ContextualDecomposition` or any Captum
    attribution built on the model (IntegratedGradients, DeepLift, GradientShap,
    KernelShap, FeatureAblation, Saliency, InputXGradient, ...). For CD the relevant
    part of a group of coefficients M is ``T^-1(M s)`` and the irrelevant part
    ``x - T^-1(M s)``. Other methods run on ``f o T^-1`` (with the residual trick, see
    :class:`TransformedModel`).

    More details: https://arxiv.org/abs/2003.01926
    """

    def __init__(self, method: Attribution, transform: Transform) -> None:
        r"""
        Args:

            method (Attribution): The attribution method, built on the model.
            transform (nn.Module): ``forward(x) -> s`` and ``inverse(s) -> x``; see
                        :class:`~captum_cd.transforms.Transform`.
        """
        if not isinstance(method, Attribution):
            raise TypeError(f"method must be a Captum attribution (e.g. IntegratedGradients(model)); got {type(method).__name__}.")
        if not callable(getattr(transform, "inverse", None)):
            raise TypeError(f"transform {type(transform).__name__} has no inverse(s); TRIM needs forward(x) and inverse(s).")
        model = method.cd.forward_func if hasattr(method, "cd") else method.forward_func
        super().__init__(model)
        self.method, self.transform = method, transform

    @classmethod
    def get_name(cls) -> str:
        return "TRIM"

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.method.multiplies_by_inputs

    def has_convergence_delta(self) -> bool:
        return False

    def attribute_future(self) -> None:
        r"""
        This method is not implemented for TRIM.
        """
        raise NotImplementedError("attribute_future is not implemented for TRIM")

    @log_usage()
    def attribute(
        self,
        inputs: Tensor,
        target: TargetType = None,
        feature_mask: Optional[Tensor] = None,
        baselines: Optional[Tensor] = None,
        additional_forward_args: Optional[object] = None,
        complex_magnitude: bool = False,
        **method_kwargs: Any,
    ) -> Tensor:
        r"""
        Args:

            inputs (Tensor): The model's input, batch first.
            target (int, tuple, Tensor, or list, optional): Output indices, in any of
                        Captum's forms. Default: None
            feature_mask (Tensor, optional): Integer group ids over the coefficients
                        (Captum's convention; first dimension 1 or the batch size),
                        e.g. one group per frequency bin
                        (:func:`~captum_cd.transforms.frequency_bins`). Methods that take
                        a feature mask get it; for the others TRIM sums the attributions
                        within each group and gives every member its group's sum, so
                        every method reports per group. Default: None
            baselines (Tensor, optional): Baselines in coefficient space, for methods
                        that take them. Default: None (zeros there)
            additional_forward_args (Any, optional): Further model arguments.
            complex_magnitude (bool, optional): For complex coefficients, report the
                        magnitude over (real, imag) per coefficient, and drop that
                        trailing dimension (gradient methods, as the TRIM paper does).
                        Default: False
            **method_kwargs: Passed to the wrapped method (``n_steps``, ``n_samples``,
                        ``perturbations_per_eval``, ...).

        Returns:
            *Tensor* of **attributions** shaped like ``transform(inputs)`` (without the
            trailing (real, imag) dimension with ``complex_magnitude``).

        Examples::

            >>> trim = TRIM(IntegratedGradients(model), Fourier1d(100))
            >>> bins = frequency_bins(100)
            >>> attr = trim.attribute(x, target=1, feature_mask=bins)   # (B, 51, 2)
        """
        if not isinstance(inputs, Tensor):
            raise TypeError("TRIM takes one input tensor (a transform acts on one input).")
        coefficients = self.transform(inputs)
        if feature_mask is not None:
            _check_mask(feature_mask, coefficients)
        user_args = _format_additional_forward_args(additional_forward_args) or ()
        if isinstance(self.method, ContextualDecomposition):
            attr = self._cd(inputs, coefficients, target, feature_mask, user_args, method_kwargs)
        else:
            attr = self._captum(inputs, coefficients, target, feature_mask, baselines, user_args, method_kwargs)
        complex_pair = getattr(self.transform, "complex_coefficients", False)
        if complex_magnitude and complex_pair:
            attr = attr.norm(dim=-1)
            feature_mask = feature_mask[..., 0] if feature_mask is not None else None
        if feature_mask is not None and not _takes_feature_mask(self.method):
            attr = _group_sums(attr, feature_mask)
        return attr

    def _captum(self, inputs, coefficients, target, feature_mask, baselines, user_args, method_kwargs) -> Tensor:
        residual = (inputs - self.transform.inverse(coefficients)).detach()
        method = copy.copy(self.method)
        method.forward_func = TransformedModel(self.method.forward_func, self.transform)
        if hasattr(method, "model"):  # DeepLift and friends hook the modules of .model
            method.model = method.forward_func
        kwargs = dict(method_kwargs, target=target, additional_forward_args=(residual, *user_args))
        parameters = inspect.signature(self.method.attribute).parameters
        if "baselines" in parameters:
            kwargs["baselines"] = baselines if baselines is not None else torch.zeros_like(coefficients[:1])
        if feature_mask is not None and "feature_mask" in parameters:
            kwargs["feature_mask"] = feature_mask
        return method.attribute(coefficients.detach(), **kwargs).detach()

    def _cd(self, inputs, coefficients, target, feature_mask, user_args, method_kwargs) -> Tensor:
        """Each group of coefficients M: relevant = T^-1(M s), irrelevant = the rest."""
        complex_pair = getattr(self.transform, "complex_coefficients", False)
        if feature_mask is None:  # one group per coefficient (a complex one is one group)
            shape = coefficients.shape[1:-1] if complex_pair else coefficients.shape[1:]
            ids = torch.arange(shape.numel(), device=inputs.device).view(1, *shape)
            feature_mask = ids.unsqueeze(-1).expand(1, *shape, 2) if complex_pair else ids
        values, index = torch.unique(feature_mask.to(inputs.device), return_inverse=True)
        batch, per_pass = inputs.shape[0], method_kwargs.get("perturbations_per_eval") or max(1, 1024 // inputs.shape[0])
        scores = []
        with torch.no_grad():
            for start in range(0, len(values), per_pass):
                groups = torch.arange(start, min(start + per_pass, len(values)), device=inputs.device)
                masks = (index.unsqueeze(0) == groups.view(-1, *([1] * index.ndim))).to(coefficients.dtype)
                selected = masks * coefficients.unsqueeze(0)  # (g, B, *coefficient shape)
                relevant = self.transform.inverse(selected.flatten(0, 1)).unflatten(0, (len(groups), batch))
                out = self.method.forward_decomposition(inputs, additional_forward_args=user_args, relevant=relevant)
                scores.append(target_scores(out.rel, out.full, target))
        scores = torch.cat(scores).t()  # (B, G)
        return scores.gather(1, index.expand(batch, *index.shape[1:]).reshape(batch, -1)).view(batch, *index.shape[1:])


def _takes_feature_mask(method: Attribution) -> bool:
    return isinstance(method, ContextualDecomposition) or "feature_mask" in inspect.signature(method.attribute).parameters


def _check_mask(feature_mask: Tensor, coefficients: Tensor) -> None:
    shape = coefficients.shape
    fits = feature_mask.ndim == coefficients.ndim and feature_mask.shape[0] in (1, shape[0]) and all(
        a in (1, b) for a, b in zip(feature_mask.shape[1:], shape[1:])
    )
    if not fits:
        raise ValueError(
            f"feature_mask has shape {tuple(feature_mask.shape)}, which does not fit the coefficients "
            f"of shape {tuple(shape)} (first dimension 1 or {shape[0]}, the others equal or 1)."
        )
    if feature_mask.is_floating_point():
        raise TypeError("feature_mask must hold integer group ids.")


def _group_sums(attr: Tensor, feature_mask: Tensor) -> Tensor:
    """Every member of a group receives the sum of the group's attributions."""
    ids = feature_mask.to(attr.device).expand_as(attr).reshape(attr.shape[0], -1)
    _, index = torch.unique(ids, return_inverse=True)
    flat = attr.reshape(attr.shape[0], -1)
    sums = torch.zeros(attr.shape[0], int(index.max()) + 1, dtype=attr.dtype, device=attr.device).scatter_add_(1, index, flat)
    return sums.gather(1, index).view_as(attr)
