"""The attribution methods and what they stand on: the decomposition engine and its rules."""

from captum_cd.attr import rules  # noqa: F401  (registers the rules)
from captum_cd.attr import dispatch  # noqa: F401  (answers torch functions on a Decomposition)
from captum_cd.attr.agglomerative import AgglomerativeCD
from captum_cd.attr.contextual_decomposition import ContextualDecomposition
from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.errors import DecompositionError, UnsupportedOperationError
from captum_cd.attr.hierarchy import Component, Hierarchy
from captum_cd.attr.layer_contextual_decomposition import LayerContextualDecomposition
from captum_cd.attr.neuron_contextual_decomposition import NeuronContextualDecomposition
from captum_cd.attr.text import token_scores, visualization_record
from captum_cd.attr.trim import TRIM

__all__ = [
    "AgglomerativeCD",
    "Component",
    "ContextualDecomposition",
    "Decomposition",
    "DecompositionError",
    "Hierarchy",
    "LayerContextualDecomposition",
    "NeuronContextualDecomposition",
    "TRIM",
    "UnsupportedOperationError",
    "token_scores",
    "visualization_record",
]
