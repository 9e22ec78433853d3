"""TRIM: attributions in a transformed space (Singh et al. 2020; docs/methods.md, "TRIM")."""

import copy
import inspect
from typing import Any, Optional, Tuple, Union

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import nn, Tensor
from tqdm.auto import tqdm

from captum_cd.attr._captum_compat import _format_additional_forward_args, TargetType
from captum_cd.attr.contextual_decomposition import check_no_baselines, ContextualDecomposition
from captum_cd.attr.groups import broadcast_ids, groups_from_ids, largest_over_groups, rows_per_pass, target_scores
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
    ``TransformedModel``).

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
        return self.method.has_convergence_delta()

    def attribute_future(self) -> None:
        r"""
        This method is not implemented for TRIM.
        """
        raise NotImplementedError("attribute_future is not implemented for TRIM")

    @log_usage()
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor]],
        baselines: Optional[Tensor] = None,
        target: TargetType = None,
        additional_forward_args: Optional[object] = None,
        feature_mask: Optional[Tensor] = None,
        complex_magnitude: bool = False,
        show_progress: bool = False,
        **method_kwargs: Any,
    ) -> Any:
        r"""
        The positional order is Captum's (``inputs, baselines, target,
        additional_forward_args, feature_mask``).

        Args:

            inputs (Tensor or tuple[Tensor]): The model's input, batch first. A tuple
                        holding one tensor (as ``captum.metrics.sensitivity_max``
                        passes it) gives a tuple back.
            baselines (Tensor, optional): Baselines in coefficient space, for methods
                        that take them; must be None for CD. Default: None (zeros
                        there)
            target (int, tuple, Tensor, or list, optional): Output indices, in any of
                        Captum's forms. Default: None
            additional_forward_args (Any, optional): Further model arguments.
            feature_mask (Tensor, optional): Integer group ids over the coefficients
                        (Captum's convention; first dimension 1 or the batch size;
                        missing dimensions broadcast as in CD's ``attribute``),
                        e.g. one group per frequency bin
                        (:func:`~captum_cd.transforms.frequency_bins`). Methods that take
                        a feature mask get it; for the others TRIM sums the attributions
                        within each group and gives every member its group's sum, so
                        every method reports per group. Default: None
            complex_magnitude (bool, optional): For complex coefficients, report the
                        magnitude over (real, imag) per coefficient, and drop that
                        trailing dimension (gradient methods, as the TRIM paper does).
                        Default: False
            show_progress (bool, optional): A tqdm bar: over CD's batched passes, or
                        passed to the wrapped method if it takes one. Default: False
            **method_kwargs: Passed to the wrapped method (``n_steps``, ``n_samples``,
                        ``perturbations_per_eval``, ``return_convergence_delta``,
                        ``nt_type`` for a NoiseTunnel, ...).

        Returns:
            *Tensor* of **attributions** shaped like ``transform(inputs)`` (without the
            trailing (real, imag) dimension with ``complex_magnitude``), a 1-tuple for
            a 1-tuple input; with ``return_convergence_delta=True`` a tuple
            ``(attributions, delta)`` as the wrapped method returns it.

        Examples::

            >>> trim = TRIM(IntegratedGradients(model), Fourier1d(100))
            >>> bins = frequency_bins(100)
            >>> attr = trim.attribute(x, target=1, feature_mask=bins)   # (B, 51, 2)
        """
        is_tuple = isinstance(inputs, tuple)
        if is_tuple and len(inputs) == 1:
            inputs = inputs[0]
        if not isinstance(inputs, Tensor):
            raise TypeError("TRIM takes one input tensor, or a tuple holding one (a transform acts on one input).")
        coefficients = self.transform(inputs)
        _check_transform(self.transform, inputs, coefficients)
        if feature_mask is not None:  # CD's checks and broadcasting of feature masks
            feature_mask = broadcast_ids(feature_mask, coefficients.shape, 0, inputs.shape[0], "the coefficients'")
        user_args = _format_additional_forward_args(additional_forward_args) or ()
        if isinstance(self.method, ContextualDecomposition):
            check_no_baselines(baselines, "TRIM with ContextualDecomposition")
            result = self._cd(inputs, coefficients, target, feature_mask, user_args, method_kwargs, show_progress)
        else:
            result = self._captum(inputs, coefficients, target, feature_mask, baselines, user_args, method_kwargs, show_progress)
        attr, delta = result if isinstance(result, tuple) else (result, None)
        complex_pair = getattr(self.transform, "complex_coefficients", False)
        if complex_magnitude and complex_pair:
            attr = attr.norm(dim=-1)
            feature_mask = feature_mask[..., 0] if feature_mask is not None else None
        if feature_mask is not None and not _takes_feature_mask(self.method):
            attr = _group_sums(attr, feature_mask)
        attr = (attr,) if is_tuple else attr
        return attr if delta is None else (attr, delta)

    def _captum(self, inputs, coefficients, target, feature_mask, baselines, user_args, method_kwargs, show_progress):
        residual = (inputs - self.transform.inverse(coefficients)).detach()
        method = _on_model(self.method, TransformedModel(self.method.forward_func, self.transform))
        kwargs = dict(method_kwargs, target=target, additional_forward_args=(residual, *user_args))
        parameters = inspect.signature(self.method.attribute).parameters
        open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())  # NoiseTunnel
        if "baselines" in parameters or (open_ended and baselines is not None):
            kwargs["baselines"] = baselines if baselines is not None else torch.zeros_like(coefficients[:1])
        if feature_mask is not None and "feature_mask" in parameters:
            kwargs["feature_mask"] = feature_mask
        if show_progress and "show_progress" in parameters:
            kwargs["show_progress"] = True
        result = method.attribute(coefficients.detach(), **kwargs)
        if isinstance(result, tuple):  # (attributions, delta)
            return result[0].detach(), result[1]
        return result.detach()

    def _cd(self, inputs, coefficients, target, feature_mask, user_args, method_kwargs, show_progress):
        """Each group of coefficients M: relevant = T^-1(M s), irrelevant = the rest."""
        unknown = set(method_kwargs) - {"perturbations_per_eval", "return_convergence_delta"}
        if unknown:
            raise TypeError(f"TRIM with ContextualDecomposition got unexpected arguments {sorted(unknown)}.")
        complex_pair = getattr(self.transform, "complex_coefficients", False)
        if feature_mask is None:  # one group per coefficient (a complex one is one group)
            shape = coefficients.shape[1:-1] if complex_pair else coefficients.shape[1:]
            ids = torch.arange(shape.numel(), device=inputs.device).view(1, *shape)
            feature_mask = ids.unsqueeze(-1).expand(1, *shape, 2) if complex_pair else ids
        batch = inputs.shape[0]
        n_groups, group_masks, assign = groups_from_ids((feature_mask.to(inputs.device),), [coefficients.shape], batch)
        per_pass = rows_per_pass(method_kwargs.get("perturbations_per_eval"), batch)
        with_delta = bool(method_kwargs.get("return_convergence_delta"))
        cd = self.method
        scores, deltas = [], []
        starts = range(0, n_groups, per_pass)
        with torch.no_grad(), tqdm(total=len(starts), desc=f"{self.get_name()} attribution", disable=not show_progress) as bar:
            reference = cd._reference_output((inputs,), user_args) if with_delta and not cd.stop_at_softmax else None
            for start in starts:
                (masks,) = group_masks(start, min(start + per_pass, n_groups))
                if masks.ndim == coefficients.ndim:  # shared by the batch: (g, *coefficient shape)
                    masks = masks.unsqueeze(1)
                selected = masks.to(coefficients.dtype) * coefficients.unsqueeze(0)  # (g, B, *coefficient shape)
                relevant = self.transform.inverse(selected.flatten(0, 1)).unflatten(0, (selected.shape[0], batch))
                out = cd.forward_decomposition(inputs, additional_forward_args=user_args, relevant=relevant)
                scores.append(target_scores(out.rel, out.full, target))
                if with_delta:
                    deviation, output = cd._deviation(out.rel, out.full - out.rel, out.full, reference)
                    deltas.append(target_scores(deviation, output, target))
                bar.update()
        (attr,) = assign(torch.cat(scores))
        return (attr, largest_over_groups(torch.cat(deltas))) if with_delta else attr


def _on_model(method: Attribution, model: nn.Module) -> Attribution:
    """A shallow copy of ``method`` (and of a wrapped method, as NoiseTunnel holds one)
    that runs ``model``."""
    method = copy.copy(method)
    method.forward_func = model
    if hasattr(method, "model"):  # DeepLift and friends hook the modules of .model
        method.model = model
    inner = getattr(method, "attribution_method", None)
    if isinstance(inner, Attribution):
        method.attribution_method = _on_model(inner, model)
    return method


def _check_transform(transform: Any, inputs: Tensor, coefficients: Tensor) -> None:
    """The inverse must give back the input's shape (broadcasting would hide a mismatch, as
    in a transform built for signals of another length)."""
    if not isinstance(coefficients, Tensor) or coefficients.ndim == 0 or coefficients.shape[0] != inputs.shape[0]:
        shape = tuple(coefficients.shape) if isinstance(coefficients, Tensor) else type(coefficients).__name__
        raise ValueError(f"the transform maps inputs of shape {tuple(inputs.shape)} to {shape}; it must keep the batch dimension first.")
    with torch.no_grad():
        back = transform.inverse(coefficients[:1])
    if tuple(back.shape[1:]) != tuple(inputs.shape[1:]):
        raise ValueError(
            f"the transform's inverse gives shape {tuple(back.shape[1:])} per example for inputs of shape "
            f"{tuple(inputs.shape[1:])}; inverse(transform(x)) must be shaped like x (was the transform "
            "made for inputs of another length?)."
        )


def _takes_feature_mask(method: Attribution) -> bool:
    return isinstance(method, ContextualDecomposition) or "feature_mask" in inspect.signature(method.attribute).parameters


def _group_sums(attr: Tensor, feature_mask: Tensor) -> Tensor:
    """Every member of a group receives the sum of the group's attributions."""
    ids = feature_mask.to(attr.device).expand_as(attr).reshape(attr.shape[0], -1)
    _, index = torch.unique(ids, return_inverse=True)
    flat = attr.reshape(attr.shape[0], -1)
    sums = torch.zeros(attr.shape[0], int(index.max()) + 1, dtype=attr.dtype, device=attr.device).scatter_add_(1, index, flat)
    return sums.gather(1, index).view_as(attr)
