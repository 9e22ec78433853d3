r"""captum-cd: contextual decomposition and its family as Captum attribution methods.

- :class:`ContextualDecomposition`: the importance of groups of features and their
  interactions, for about the cost of a forward pass.
- :func:`register_rule` and :mod:`captum_cd.rules`: how each torch function decomposes.
"""

from captum_cd.attr import rules
from captum_cd.attr.agglomerative import AgglomerativeCD
from captum_cd.attr.contextual_decomposition import ContextualDecomposition
from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.hierarchy import Component, Hierarchy
from captum_cd.attr.errors import DecompositionError, UnsupportedOperationError
from captum_cd.attr.masks import grid_ids, ids_to_masks, token_masks
from captum_cd.attr.rules import register_rule
from captum_cd.attr.trim import TRIM
from captum_cd.penalties import CDEPRegularizer
from captum_cd import transforms

__version__ = "0.1.0"

__all__ = [
    "AgglomerativeCD",
    "CDEPRegularizer",
    "Component",
    "ContextualDecomposition",
    "Hierarchy",
    "TRIM",
    "Decomposition",
    "DecompositionError",
    "UnsupportedOperationError",
    "grid_ids",
    "ids_to_masks",
    "register_rule",
    "rules",
    "token_masks",
    "transforms",
]
