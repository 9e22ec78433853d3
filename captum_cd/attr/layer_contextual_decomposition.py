"""Layer contextual decomposition: CD scores of a hidden layer's units (Captum's layer family)."""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from captum.attr import LayerAttribution
from captum.log import log_usage
from torch import nn, Tensor

from captum_cd.attr._captum_compat import DecompositionAttribution, TargetType, TensorOrTupleOfTensorsGeneric
from captum_cd.attr.contextual_decomposition import check_no_baselines, ContextualDecomposition

LayerMask = Union[None, Tensor, Sequence[Optional[Tensor]]]


class LayerContextualDecomposition(DecompositionAttribution, LayerAttribution):
    r"""
    Contextual decomposition of a hidden layer: the decomposition starts at the output
    (or input) of ``layer``, so each unit of that layer, or each group of units given
    by ``layer_mask``, receives the relevant part of the target output when that group
    alone is relevant and everything else in the layer is irrelevant. What is added after
    the layer without coming from it (a bias, a branch that bypasses the layer) is split
    between the parts as CD splits a bias. The counterpart of Captum's LayerFeatureAblation, with CD's
    ``relevant + irrelevant = output`` exactness and all groups in batched passes.

    Inputs may be of any dtype (token ids included), since the decomposition starts
    after the layer. ``layer`` may be a list of layers: each is decomposed in turn and
    a list of attributions comes back, one per layer.

    More details: https://arxiv.org/abs/1806.05337 and ``docs/methods.md`` in the
    project.
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        layer: Union[nn.Module, List[nn.Module]],
        device_ids: Union[None, List[int]] = None,
        rules: Optional[Dict[Callable, Callable]] = None,
        module_rules: Optional[Dict[Any, Any]] = None,
        stop_at_softmax: bool = False,
    ) -> None:
        r"""
        Args:

            model (nn.Module or Callable): The model to decompose; it must return one
                        tensor.
            layer (nn.Module or list[nn.Module]): The layer whose units are scored.
                        It must run once per forward pass and return (or, with
                        ``attribute_to_layer_input``, take as positional inputs)
                        floating-point tensors: one, or a tuple of several.
            device_ids (list[int], optional): Accepted for Captum's signature; CD
                        runs the model as it is, so DataParallel needs nothing here.
                        Default: None
            rules, module_rules, stop_at_softmax: As for
                        :class:`~captum_cd.ContextualDecomposition`.
        """
        LayerAttribution.__init__(self, model, layer, device_ids)
        self._cd_options = dict(rules=rules, module_rules=module_rules, stop_at_softmax=stop_at_softmax)

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        layer_baselines: None = None,
        target: TargetType = None,
        additional_forward_args: Optional[object] = None,
        layer_mask: LayerMask = None,
        attribute_to_layer_input: bool = False,
        perturbations_per_eval: Optional[int] = None,
        show_progress: bool = False,
        return_convergence_delta: bool = False,
    ) -> Union[Tensor, List[Tensor], Tuple[Union[Tensor, List[Tensor]], Union[Tensor, List[Tensor]]]]:
        r"""
        Args:

            inputs (Tensor or tuple[Tensor, ...]): The model's inputs, batch first.
            layer_baselines (None): CD needs no baseline; must be None (kept so
                        positional calls follow Captum's order, as in
                        LayerFeatureAblation). Default: None
            target (int, tuple, Tensor, or list, optional): Output indices, in any of
                        Captum's forms. Default: None (the output is one number per
                        example)
            additional_forward_args (Any, optional): Further model arguments.
                        Default: None
            layer_mask (Tensor, tuple[Tensor, ...] or list, optional): Integer group
                        ids over the layer's output (or inputs), shaped like it or
                        broadcastable to it, first dimension 1 or the batch size, as
                        Captum's layer_mask; a tuple with one mask per tensor where
                        the layer's value is a tuple (an id names one group across
                        them). With a list of layers, a list with one mask (or None)
                        per layer. Default: None (every unit its own group)
            attribute_to_layer_input (bool, optional): Decompose from the layer's
                        positional inputs instead of its output. Default: False
            perturbations_per_eval (int, optional): Groups per batched pass.
                        Default: None (chosen to bound memory)
            show_progress (bool, optional): A tqdm bar over the passes.
                        Default: False
            return_convergence_delta (bool, optional): Also return, per example,
                        ``relevant + irrelevant - output`` at the target (0 up to
                        rounding). Default: False

        Returns:
            *Tensor* of **attributions** shaped like the layer's output (input), a
            tuple of them where that is a tuple of several tensors, or a list for a
            list of layers; with ``return_convergence_delta`` a tuple
            ``(attributions, delta)`` (delta of shape ``(B,)``, a list for a list of
            layers).

        Examples::

            >>> lcd = LayerContextualDecomposition(net, net.conv2)
            >>> attr = lcd.attribute(images, target=labels)          # (B, C, H, W)
            >>> channels = torch.arange(16).view(1, 16, 1, 1)       # one group a channel
            >>> attr = lcd.attribute(images, target=labels, layer_mask=channels)
        """
        check_no_baselines(layer_baselines, type(self).__name__)
        layers = self.layer if isinstance(self.layer, (list, tuple)) else [self.layer]
        masks = _masks_per_layer(layer_mask, len(layers), isinstance(self.layer, (list, tuple)))
        results = []
        for layer, mask in zip(layers, masks):
            cd = ContextualDecomposition(self.forward_func, layer=layer, **self._cd_options)
            cd._at_layer_input = attribute_to_layer_input
            results.append(
                cd.attribute(
                    inputs,
                    target=target,
                    additional_forward_args=additional_forward_args,
                    feature_mask=mask,
                    perturbations_per_eval=perturbations_per_eval,
                    show_progress=show_progress,
                    return_convergence_delta=return_convergence_delta,
                )
            )
        if isinstance(self.layer, (list, tuple)):
            if return_convergence_delta:
                return [r[0] for r in results], [r[1] for r in results]
            return results
        return results[0]


def _masks_per_layer(layer_mask: LayerMask, count: int, is_list: bool) -> List[Optional[Tensor]]:
    if layer_mask is None:
        return [None] * count
    if not is_list:
        return [layer_mask]  # a tensor (or Captum's tuple form for one layer)
    if not isinstance(layer_mask, (list, tuple)) or len(layer_mask) != count:
        raise ValueError(
            f"with a list of {count} layers, layer_mask must be a list of {count} masks (None for "
            f"every unit its own group); got {type(layer_mask).__name__}."
        )
    return list(layer_mask)
