r"""captum-cd: contextual decomposition and its family as Captum attribution methods.

- :class:`ContextualDecomposition`: the importance of groups of features and their
  interactions, for about the cost of a forward pass.
- :class:`LayerContextualDecomposition`, :class:`NeuronContextualDecomposition`: Captum's
  layer and neuron families: scores of a hidden layer's units, and CD of one hidden unit.
- :class:`LLMContextualDecomposition`: what a language model says, in Captum's LLM API
  (a prompt and a target text in, an ``LLMAttributionResult`` out), every target token
  from one pass.
- :class:`AgglomerativeCD`: a hierarchy of feature groups with a CD score at every node.
- :class:`TRIM`: attributions in a transformed space (:mod:`captum_cd.transforms`).
- :class:`CDEPRegularizer`: penalise explanations while training
  (:mod:`captum_cd.penalties`, with the gradient penalties it is compared with).
- :mod:`captum_cd.wavelets`: adaptive wavelet distillation: a learnable wavelet, its loss
  and trainer, and the distilled scikit-learn estimators.
- :func:`register_rule` and :mod:`captum_cd.rules`: how each torch function decomposes.
"""

from captum_cd import transforms, wavelets
from captum_cd.attr import (
    AgglomerativeCD,
    Component,
    ContextualDecomposition,
    Decomposition,
    DecompositionError,
    Hierarchy,
    LayerContextualDecomposition,
    LLMContextualDecomposition,
    NeuronContextualDecomposition,
    rules,
    TRIM,
    token_scores,
    UnsupportedOperationError,
    visualization_record,
)
from captum_cd.attr.masks import grid_ids, ids_to_masks, text_span_masks, token_masks
from captum_cd.attr.rules import register_rule
from captum_cd.penalties import CDEPRegularizer

__version__ = "0.1.0"

__all__ = [
    "AgglomerativeCD",
    "CDEPRegularizer",
    "Component",
    "ContextualDecomposition",
    "Decomposition",
    "DecompositionError",
    "Hierarchy",
    "LayerContextualDecomposition",
    "LLMContextualDecomposition",
    "NeuronContextualDecomposition",
    "TRIM",
    "UnsupportedOperationError",
    "grid_ids",
    "ids_to_masks",
    "register_rule",
    "rules",
    "text_span_masks",
    "token_masks",
    "token_scores",
    "transforms",
    "visualization_record",
    "wavelets",
]
