from captum_cd.attr import rules  # noqa: F401  (registers the rules)
from captum_cd.attr.contextual_decomposition import ContextualDecomposition
from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.errors import DecompositionError, UnsupportedOperationError

__all__ = ["ContextualDecomposition", "Decomposition", "DecompositionError", "UnsupportedOperationError"]
