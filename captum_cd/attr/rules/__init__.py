r"""The rules of contextual decomposition, one family a file.

================  ==============================================================
family            what it covers
================  ==============================================================
affine            Linear, ConvNd, ConvTransposeNd, addmm, grouped_mm: bias split by
                  magnitude
activations       ReLU form (piecewise linear, f(0) = 0); Shapley form (the rest),
                  guarded where a part leaves the domain (sqrt, log1p, exp, ...);
                  functions infinite at 0 (rsqrt, 1/x, log) over their argument's lineage
shapley           the Shapley form, and the proportional form where it is undefined
pooling           max pooling, max/min along a dim, topk, sort, kthvalue, median:
                  the order from the full
normalization     BatchNorm (eval), LayerNorm, GroupNorm, InstanceNorm, RMSNorm,
                  F.normalize
stochastic        dropout (identity in eval mode)
arithmetic        constants (added: a bias; multiplied: linear), residual sums, addcmul;
                  products: one function of one tensor (Shapley form), a broadcast
                  gate or statistic (from the full), two full factors (Shapley split)
lineage           which tensor a value is an elementwise function of
structural        view, cat, indexing, padding, average pooling, sums, matmul, ...
statistics        var, std (as written out by hand), logsumexp (weights from the full)
passthrough       metadata, comparisons, factories, softmax: computed on the full
recurrent         LSTM (three players, bias first), GRU (derived alike), plain RNN
attention         probabilities from the full activation, applied to decomposed values
hooks             gradient hooks on a decomposed value: on both of its parts
================  ==============================================================

:func:`~captum_cd.register_rule` adds or replaces a rule for a torch function. The family rules
below are public so a user can reuse them for their own functions, e.g.
``register_rule(my_gelu_variant, shapley_activation)``.
"""

from captum_cd.attr.rules import (  # noqa: F401  (importing registers the rules)
    activations,
    affine,
    attention,
    arithmetic,
    hooks,
    normalization,
    passthrough,
    pooling,
    recurrent,
    statistics,
    stochastic,
    structural,
)
from captum_cd.attr.rules.activations import relu_form, shapley_activation
from captum_cd.attr.rules.affine import affine as affine_map
from captum_cd.attr.rules.passthrough import on_full
from captum_cd.attr.rules.registry import RULES, register_rule
from captum_cd.attr.rules.structural import vmapped as linear

__all__ = [
    "RULES",
    "register_rule",
    "relu_form",
    "shapley_activation",
    "affine_map",
    "linear",
    "on_full",
]
