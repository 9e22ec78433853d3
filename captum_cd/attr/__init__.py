"""The attribution methods and what they stand on.

- the methods, one Captum class each: :mod:`.contextual_decomposition` (also the engine's
  entry, ``forward_decomposition``), :mod:`.layer_contextual_decomposition`,
  :mod:`.neuron_contextual_decomposition`, :mod:`.llm_contextual_decomposition` (with
  :mod:`.prompt_features`), :mod:`.agglomerative`, :mod:`.trim` (with :mod:`.transforms`);
- :mod:`.groups`: features -> groups -> masks -> relevant parts -> target scores, shared
  by every method; :mod:`.masks` and :mod:`.text` build masks and read scores for users;
- the engine: :mod:`.decomposition` (the value and the call's context), :mod:`.dispatch`
  (torch function -> rule), :mod:`.rules` (one family a file, and the registry),
  :mod:`.module_rules` (rules for one module), :mod:`.errors`.
"""

from captum_cd.attr import rules  # noqa: F401  (registers the rules)
from captum_cd.attr import dispatch  # noqa: F401  (answers torch functions on a Decomposition)
from captum_cd.attr.agglomerative import AgglomerativeCD
from captum_cd.attr.contextual_decomposition import ContextualDecomposition
from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.errors import DecompositionError, UnsupportedOperationError
from captum_cd.attr.hierarchy import Component, Hierarchy
from captum_cd.attr.layer_contextual_decomposition import LayerContextualDecomposition
from captum_cd.attr.llm_contextual_decomposition import LLMContextualDecomposition
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
    "LLMContextualDecomposition",
    "NeuronContextualDecomposition",
    "TRIM",
    "UnsupportedOperationError",
    "token_scores",
    "visualization_record",
]
