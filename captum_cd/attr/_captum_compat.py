"""Every import of a Captum private helper, in one place, and what Captum's
``Attribution`` asks of the three CD classes (:class:`DecompositionAttribution`).

Captum's public surface is ``captum.attr``, ``captum.metrics`` and ``captum.log``; the
helpers below are private and may move between releases. If one does, this file is the
only one to change.
"""

import warnings

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
    irrelevant = output is checkable, so there is a convergence delta; and the layer and
    neuron classes have no ``attribute_future`` (nor have Captum's LayerFeatureAblation and
    NeuronFeatureAblation); ContextualDecomposition has its own."""

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def has_convergence_delta(self) -> bool:
        return True

    def attribute_future(self, *args: object, **kwargs: object) -> None:
        r"""
        Not implemented for the layer and neuron classes, as for Captum's layer and neuron
        ablation; :meth:`ContextualDecomposition.attribute_future` is.
        """
        raise NotImplementedError(
            f"attribute_future is not implemented for {type(self).__name__} (nor for Captum's layer and "
            "neuron ablation); ContextualDecomposition.attribute_future is."
        )


# Captum's LLM API: its default generation arguments and how it names output tokens.
try:
    from captum.attr._core.llm_attr import DEFAULT_GEN_ARGS  # noqa: F401
except ImportError:  # pragma: no cover - older Captum
    DEFAULT_GEN_ARGS = {"max_new_tokens": 25, "do_sample": False, "temperature": None, "top_p": None}


def pretty_tokens(ids, tokenizer) -> list:
    """Output tokens as Captum's LLM attribution names them (readable text, no byte
    markers); where its helper fails (token ids that split a character, as random models
    generate), each token decoded alone."""
    try:
        from captum.attr._core.llm_attr import _convert_ids_to_pretty_tokens

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its notes on tokens that split a character
            return _convert_ids_to_pretty_tokens(ids, tokenizer)
    except (ImportError, IndexError):
        return [tokenizer.decode([i]).replace("\n", "\\n").strip() for i in ids.tolist()]
