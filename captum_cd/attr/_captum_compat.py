"""Every import of a Captum private helper, in one place, and what Captum's
``Attribution`` asks of the three CD classes (:class:`DecompositionAttribution`).

Captum's public surface is ``captum.attr``, ``captum.metrics`` and ``captum.log``; the
helpers below are private and may move between releases. If one does, this file is the
only one to change.
"""

from captum._utils.common import (  # noqa: F401
    _expand_target,
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
    _select_targets,
    _verify_select_neuron,
    ExpansionTypes,
)
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric  # noqa: F401


class DecompositionAttribution:
    r"""Captum's metadata for ContextualDecomposition, LayerContextualDecomposition and
    NeuronContextualDecomposition, mixed in before Captum's base class: the scores are
    contributions to the output (multiplied by the inputs, like DeepLift's); relevant +
    irrelevant = output is checkable, so there is a convergence delta; and there is no
    asynchronous ``attribute_future``."""

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return True

    def attribute_future(self) -> None:
        r"""
        This method is not implemented for the contextual decomposition classes.
        """
        raise NotImplementedError(f"attribute_future is not implemented for {type(self).__name__}")
