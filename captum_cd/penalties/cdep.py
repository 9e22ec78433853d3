"""CDEP: penalise a model's explanations during training (Rieger et al., ICML 2020;
docs/methods.md, "CDEP")."""

from typing import Any, Optional, Sequence, Tuple

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn, Tensor

from captum_cd.attr.contextual_decomposition import check_inputs, check_model, ContextualDecomposition
from captum_cd.attr.groups import check_masks, select_rows
from captum_cd.penalties.base import ModelLoss

FORMS = ("image", "per_example", "text", "target")


class CDEPRegularizer(ModelLoss):
    r"""
    Contextual decomposition explanation penalisation: a loss term that pushes the CD
    contribution of regions a user marks as spurious (a colour, a patch, a word) toward
    zero, so the model stops relying on them. Add it to the loss in an ordinary loop::

        reg = CDEPRegularizer(model, weight=10.0)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y) + reg(x, masks, target=y)

    or share one pass between the prediction loss and the penalty::

        logits, penalty = reg.output_and_penalty(x, masks, target=y)
        loss = F.cross_entropy(logits, y) + penalty

    All regions go through the model in one batched CD pass, with the autograd graph
    kept. CD is forward-only: no double backpropagation, unlike gradient penalties.

    The forms (``beta``/``gamma`` the relevant/irrelevant parts of the output logits for a
    region, ``sigmoid(beta - gamma) = softmax([beta, gamma])_0``):

    - ``"image"`` (ColorMNIST, DecoyMNIST): for each region the mean over the batch and
      over all classes of ``sigmoid(beta_k - gamma_k)``, summed over the regions.
    - ``"per_example"`` (skin-lesion patches): the same, averaged only over the examples
      whose region is not empty (masks ``(B, R, ...)``).
    - ``"text"`` (SST decoys): label class only, ``-log sigmoid(gamma_y - beta_y)``,
      averaged over the examples that contain the region (token masks).
    - ``"target"`` (general): a target explanation value ``t_r`` in [0, 1] per region:
      the binary cross-entropy between ``sigmoid(beta_k - gamma_k)`` and ``t_r``, mean over
      the batch and classes, summed over regions. ``t_r = 0`` pushes a region toward
      irrelevant, ``t_r = 1`` toward relevant.

    Training mode: the model is decomposed as it trains, never switched to eval behind
    your back. Batch norm uses the statistics of the ordinary pass (so the decomposition
    stays complete and the running statistics are updated once, as in a normal step);
    dropout applies one random mask to both parts, the mask of the ordinary pass.
    """

    def __init__(
        self,
        model: nn.Module,
        weight: float = 1.0,
        layer: Optional[nn.Module] = None,
        form: str = "image",
        target_values: Optional[Sequence[float]] = None,
        subsample: Optional[int] = None,
        **cd_options: Any,
    ) -> None:
        r"""
        Args:

            model (nn.Module): The model being trained.
            weight (float, optional): The penalty's weight lambda. Default: 1.0
            layer (nn.Module, optional): Decompose from this module's output: the
                        embedding of a text model, or the last layer of a frozen
                        feature extractor (cheaper: the extractor runs once, plainly).
                        Default: None
            form (str, optional): ``"image"``, ``"per_example"``, ``"text"`` or
                        ``"target"`` (class docstring). Default: "image"
            target_values (sequence of float, optional): For ``form="target"``, one
                        value in [0, 1] per region. Default: None
            subsample (int, optional): Compute the penalty on this many examples of
                        each batch (drawn at random), a lever for cost. Default: None
            **cd_options: ``rules``, ``module_rules``, as for
                        :class:`~captum_cd.ContextualDecomposition`.
        """
        super().__init__(model)
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}; got {form!r}.")
        if form == "target" and target_values is None:
            raise ValueError("form='target' needs target_values, one value in [0, 1] per region.")
        if not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight must be a finite number >= 0; got {weight!r}.")
        if subsample is not None and (isinstance(subsample, bool) or not isinstance(subsample, numbers.Integral) or subsample < 1):
            raise ValueError(f"subsample must be a positive integer (examples per batch) or None; got {subsample!r}.")
        self.cd = ContextualDecomposition(model, layer=layer, **cd_options)
        self.weight, self.form, self.subsample = weight, form, subsample
        self.target_values = None if target_values is None else _target_values(target_values)

    def forward(self, inputs: Tensor, masks: Tensor, target: Optional[Tensor] = None, additional_forward_args: Optional[object] = None) -> Tensor:
        r"""
        Args:

            inputs (Tensor): The batch, ``(B, *features)`` (token ids with ``layer``).
            masks (Tensor): Regions shared by the batch ``(R, *features)`` (or
                        broadcastable, ``(R, 1, H, W)`` over channels), or per example
                        ``(B, R, *features)``; for text, token masks ``(B, T)`` or
                        ``(B, R, T)`` (see :func:`~captum_cd.token_masks`).
            target (Tensor, optional): The labels ``(B,)``; needed by the text form.
            additional_forward_args (Any, optional): Further model arguments.

        Returns:
            *Tensor*: ``weight * explanation_loss``, a scalar with its autograd graph.
        """
        return self.output_and_penalty(inputs, masks, target, additional_forward_args, need_output=False)[1]

    def output_and_penalty(
        self,
        inputs: Tensor,
        masks: Tensor,
        target: Optional[Tensor] = None,
        additional_forward_args: Optional[object] = None,
        need_output: bool = True,
    ) -> Tuple[Optional[Tensor], Tensor]:
        r"""
        The model's output and the weighted penalty from one pass (with ``subsample``,
        an ordinary pass for the output plus CD of the subsample).

        Returns:
            2-element tuple of **output** (the logits of every example, with their graph)
            and **penalty** (as :meth:`forward`).
        """
        masks, per_example = self._check(inputs, masks, target)
        batch = inputs.shape[0]
        output = None
        if self.subsample is not None and self.subsample < batch:
            if need_output:
                output = self.model(inputs, *(additional_forward_args or ()))
            keep = torch.randperm(batch, device=inputs.device)[: self.subsample]
            inputs, target = inputs[keep], (target[keep] if target is not None else None)
            masks = masks[:, keep] if per_example else masks
            additional_forward_args = select_rows(additional_forward_args, keep, batch)
        decomposition = self.cd.forward_decomposition(inputs, masks, additional_forward_args, training="batch")
        if output is None and need_output:
            output = decomposition.full
        beta = decomposition.rel  # (R, B, classes)
        if target is not None and self.form == "text" and int(target.max()) >= beta.shape[-1]:
            raise ValueError(f"target holds label {int(target.max())} but the model has {beta.shape[-1]} classes.")
        gamma = decomposition.full - beta
        present = _region_present(masks, per_example, beta.shape[1])  # (R, B): the region is not empty
        return output, self.weight * self._loss(beta, gamma, present, target)

    def _check(self, inputs: Tensor, masks: Tensor, target: Optional[Tensor]) -> Tuple[Tensor, bool]:
        """Everything that can be checked before the model runs (a refused call must not
        have updated batch norm statistics); returns the masks as CD groups."""
        if not isinstance(inputs, Tensor) or not isinstance(masks, Tensor):
            raise TypeError(f"inputs and masks must be tensors; got {type(inputs).__name__} and {type(masks).__name__}.")
        batch = inputs.shape[0] if inputs.ndim else 0
        if target is not None:
            if not isinstance(target, Tensor) or target.is_floating_point() or target.dtype == torch.bool:
                raise TypeError(f"target must be a tensor of integer labels, shape ({batch},); got {type(target).__name__}.")
            if target.ndim != 1 or target.shape[0] != batch:
                raise ValueError(f"target must hold one label per example, shape ({batch},); got {tuple(target.shape)}.")
            if target.numel() and int(target.min()) < 0:
                raise ValueError(f"target holds a negative label ({int(target.min())}); labels are class indices >= 0.")
        if self.form == "text" and target is None:
            raise ValueError("the text form penalises the label class: pass target=labels.")
        check_model(self.model, "batch")
        check_inputs((inputs,), self.cd.layer is None, self.model)
        grouped, per_example = self._group_masks(masks, inputs)
        if self.cd.layer is None:
            check_masks((grouped,), (inputs,), "inputs")
        elif not torch.isfinite(grouped).all() or ((grouped < 0) | (grouped > 1)).any():
            raise ValueError("masks must hold values in [0, 1] (1 marks the region).")
        if self.target_values is not None and self.target_values.numel() != grouped.shape[0]:
            raise ValueError(f"target_values has {self.target_values.numel()} entries for {grouped.shape[0]} regions; give one per region.")
        return grouped, per_example

    def _group_masks(self, masks: Tensor, inputs: Tensor) -> Tuple[Tensor, bool]:
        """Regions as CD groups: ``(R, *features)`` shared, or ``(R, B, *features)`` per
        example (returned with True)."""
        batch = inputs.shape[0]
        if self.cd.layer is not None:  # token masks over the positions of a (B, T, E) embedding
            if masks.ndim == 2 and masks.shape[0] == batch:
                return masks[None, :, :, None], True  # (B, T): one region per example
            if masks.ndim == 3 and masks.shape[0] == batch:
                return masks.transpose(0, 1).unsqueeze(-1), True  # (B, R, T)
            return masks, False
        if masks.ndim == inputs.ndim + 1:
            if masks.shape[0] != batch:
                raise ValueError(f"per-example masks must have shape (B, R, *features) with B = {batch}; got {tuple(masks.shape)}.")
            return masks.transpose(0, 1), True  # (B, R, ...) -> (R, B, ...)
        return masks, False

    def _loss(self, beta: Tensor, gamma: Tensor, present: Tensor, target: Optional[Tensor]) -> Tensor:
        difference = beta - gamma  # (R, B, classes)
        # An example without the region has nothing to penalise: it contributes 0.
        absent_zero = present.to(difference.dtype).unsqueeze(-1)
        if self.form == "image":
            return (torch.sigmoid(difference) * absent_zero).mean(dim=(1, 2)).sum()
        if self.form == "per_example":
            per_example = torch.sigmoid(difference).mean(dim=2)  # (R, B)
            return (_masked_mean(per_example, present)).sum()
        if self.form == "text":
            label = target.view(1, -1, 1).expand(difference.shape[0], -1, 1)
            per_example = -F.logsigmoid(-difference.gather(2, label).squeeze(2))  # -log sigmoid(gamma_y - beta_y)
            return _masked_mean(per_example, present).sum()
        values = self.target_values.to(difference).view(-1, 1, 1).expand_as(difference)
        loss = F.binary_cross_entropy_with_logits(difference, values, reduction="none")
        return (loss * absent_zero).mean(dim=(1, 2)).sum()


def _target_values(values: Any) -> Tensor:
    try:
        values = torch.as_tensor(values, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"target_values must be a sequence of numbers in [0, 1]; got {values!r}.") from error
    if values.ndim != 1 or not torch.isfinite(values).all() or ((values < 0) | (values > 1)).any():
        raise ValueError(f"target_values must be one number in [0, 1] per region; got {values.tolist()}.")
    return values


def _region_present(masks: Tensor, per_example: bool, batch: int) -> Tensor:
    """(R, B): whether each example's region is non-empty."""
    if per_example:
        return masks.flatten(2).ne(0).any(-1) if masks.ndim > 2 else masks.ne(0)
    return masks.flatten(1).ne(0).any(-1, keepdim=True).expand(-1, batch)


def _masked_mean(values: Tensor, present: Tensor) -> Tensor:
    """Mean over the examples that have the region (0 where none has it)."""
    present = present.to(values.dtype)
    return (values * present).sum(1) / present.sum(1).clamp(min=1)
