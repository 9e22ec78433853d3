"""Neuron contextual decomposition: CD of input groups for one hidden unit (Captum's neuron family)."""

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from captum.attr import NeuronAttribution
from captum.log import log_usage
from torch import nn, Tensor

from captum_cd.attr._captum_compat import _verify_select_neuron, DecompositionAttribution, TensorOrTupleOfTensorsGeneric
from captum_cd.attr.contextual_decomposition import check_no_baselines, ContextualDecomposition

NeuronSelector = Union[int, Tuple[Union[int, slice], ...], Callable[[Tensor], Tensor]]


class NeuronContextualDecomposition(DecompositionAttribution, NeuronAttribution):
    r"""
    Contextual decomposition of one hidden unit: the model is run up to ``layer`` and
    the unit chosen by ``neuron_selector`` (a unit, a channel or an attention head
    summed with a slice, or any function of the layer's output) is decomposed
    instead of the model's output. Each input feature, or each group given by
    ``feature_mask``, receives the relevant part of that unit. The counterpart of
    Captum's NeuronFeatureAblation; what comes after ``layer`` is never run.

    More details: https://arxiv.org/abs/1806.05337 and ``docs/methods.md`` in the
    project.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module,
        device_ids: Union[None, List[int]] = None,
        rules: Optional[Dict[Callable, Callable]] = None,
        module_rules: Optional[Dict[Any, Any]] = None,
        start_layer: Optional[nn.Module] = None,
    ) -> None:
        r"""
        Args:

            model (nn.Module): The model.
            layer (nn.Module): The layer that holds the unit. It must run once per
                        forward pass.
            device_ids (list[int], optional): Accepted for Captum's signature.
                        Default: None
            rules, module_rules: As for :class:`~captum_cd.ContextualDecomposition`
                        (module names are those of ``model``).
            start_layer (nn.Module, optional): Start the decomposition at this
                        module's output instead of at the inputs, e.g. the embedding
                        of a token model (``feature_mask`` is then over its output).
                        Default: None
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}.")
        NeuronAttribution.__init__(self, model, layer, device_ids)
        named = {f"model.{k}" if isinstance(k, str) else k: v for k, v in (module_rules or {}).items()}
        self._cd_options = dict(rules=rules, module_rules=named)
        self.start_layer = start_layer

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        neuron_selector: NeuronSelector,
        baselines: None = None,
        additional_forward_args: Optional[object] = None,
        feature_mask: Union[None, Tensor, Tuple[Tensor, ...]] = None,
        attribute_to_neuron_input: bool = False,
        perturbations_per_eval: Optional[int] = None,
        show_progress: bool = False,
        return_convergence_delta: bool = False,
    ) -> Union[TensorOrTupleOfTensorsGeneric, Tuple[TensorOrTupleOfTensorsGeneric, Tensor]]:
        r"""
        Args:

            inputs (Tensor or tuple[Tensor, ...]): The model's inputs, batch first.
            neuron_selector (int, tuple, or Callable): The unit, as Captum's neuron
                        methods take it: an int (2-D layer output), a tuple of ints
                        and slices indexing the output without its batch dimension
                        (with a slice, the selected units are summed: a channel
                        ``(c, slice(None), slice(None))``, or a head's features
                        ``(t, slice(h * d, (h + 1) * d))``), or a function of the
                        layer's output returning one number per example (where the
                        layer's output, or inputs, are several tensors, only a
                        function, which gets the tuple).
            baselines (None): CD needs no baseline; must be None. Default: None
            additional_forward_args (Any, optional): Further model arguments.
                        Default: None
            feature_mask (Tensor or tuple[Tensor, ...], optional): Integer group ids
                        over the inputs (over ``start_layer``'s output with it), as
                        in FeatureAblation. Default: None (every feature its own
                        group)
            attribute_to_neuron_input (bool, optional): Select the unit from the
                        layer's positional inputs instead of its output. Default: False
            perturbations_per_eval (int, optional): Groups per batched pass.
                        Default: None
            show_progress (bool, optional): A tqdm bar over the passes.
                        Default: False
            return_convergence_delta (bool, optional): Also return, per example,
                        ``relevant + irrelevant - unit`` (0 up to rounding).
                        Default: False

        Returns:
            *Tensor* or *tuple[Tensor, ...]* of **attributions** shaped like the
            inputs (like ``start_layer``'s output with it); with
            ``return_convergence_delta`` a tuple ``(attributions, delta)``.

        Examples::

            >>> ncd = NeuronContextualDecomposition(net, net.conv2)
            >>> attr = ncd.attribute(images, (3, 4, 4))                       # one unit
            >>> attr = ncd.attribute(images, (3, slice(None), slice(None)))   # channel 3
        """
        check_no_baselines(baselines, type(self).__name__)
        unit = _UnitOutput(self.forward_func, self.layer, neuron_selector, attribute_to_neuron_input)
        cd = ContextualDecomposition(unit, layer=self.start_layer, **self._cd_options)
        return cd.attribute(
            inputs,
            additional_forward_args=additional_forward_args,
            feature_mask=feature_mask,
            perturbations_per_eval=perturbations_per_eval,
            show_progress=show_progress,
            return_convergence_delta=return_convergence_delta,
        )


class _Reached(Exception):
    """Raised by the hook on ``layer`` so nothing after it runs."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


class _UnitOutput(nn.Module):
    """The model truncated at ``layer``, returning the selected unit: ``(B,)``."""

    def __init__(self, model: nn.Module, layer: nn.Module, selector: NeuronSelector, at_input: bool) -> None:
        super().__init__()
        self.model, self.selector, self.at_input = model, selector, at_input
        self.__dict__["layer"] = layer  # not a submodule: named_modules stay the model's
        self.training = model.training  # the engine reads the mode; the model's is unchanged

    def forward(self, *args: Any) -> Tensor:
        if self.at_input:
            handle = self.layer.register_forward_pre_hook(lambda m, a: _stop(a))
        else:
            handle = self.layer.register_forward_hook(lambda m, a, out: _stop(out))
        try:
            self.model(*args)
        except _Reached as reached:
            return _verify_select_neuron(reached.value, self.selector)
        finally:
            handle.remove()
        raise ValueError(f"layer {type(self.layer).__name__} did not run in the model's forward pass.")


def _stop(value: Any) -> None:
    """Stops the forward at the layer with its output or positional inputs, a tuple of
    tensors (the selector gets them as Captum's neuron methods give them)."""
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if not isinstance(v, Tensor):
            raise TypeError(f"the layer's output (or input) holds a {type(v).__name__}; a neuron is selected from tensors.")
    raise _Reached(values)
