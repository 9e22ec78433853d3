"""The differential fuzzer (tests/fuzz_models.py) in the suite: a fixed range of seeds,
every invariant on every model; and proof that it catches wrong rules, registered here
for the duration of a test. A larger run: ``python tests/fuzz_models.py --models 2000``."""

import pytest
import torch
import torch.nn.functional as F

import fuzz_models
from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.rules import affine_map, RULES, shapley_activation
from captum_cd.attr.rules._util import fulls

SEEDS = range(0, 300)


def test_random_models_satisfy_every_invariant(one_thread):
    failures = fuzz_models.run(SEEDS)
    assert not failures, "\n".join(f"seed {s} ({kind}) {check}: {why}" for s, kind, check, why in failures)


def _bias_to_the_relevant_part(func, args, kwargs):
    """Wrong: the whole bias to the relevant part."""
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    out = func(*fulls(args), **fulls(kwargs))
    plain = affine_map(func, (args[0], args[1], None, *args[3:]), {k: v for k, v in kwargs.items() if k != "bias"})
    if bias is None:
        return plain
    return Decomposition(out, plain.rel + (bias if func is F.linear else bias.view(-1, *([1] * (out.ndim - 2)))))


def _without_f0(func, args, kwargs):
    """Wrong: ``f(beta)`` without subtracting ``f(0)``."""
    x = args[0]
    return Decomposition(func(*fulls(args), **fulls(kwargs)), func(x.rel, *args[1:], **kwargs))


def _winners_of_the_relevant_part(func, args, kwargs):
    """Wrong: max pooling takes the winners of each relevant part instead of the full's."""
    x = args[0]
    return Decomposition(func(*fulls(args), **fulls(kwargs)), func(x.rel.flatten(0, 1), *args[1:], **kwargs).unflatten(0, x.rel.shape[:2]))


def _shapley_without_half(func, args, kwargs):
    """Wrong: the Shapley form's two orders summed, not averaged."""
    out = shapley_activation(func, args, kwargs)
    return Decomposition(out.full, 2 * out.rel)


WRONG_RULES = {
    "bias to the relevant part": ([F.linear, F.conv1d, F.conv2d], _bias_to_the_relevant_part, ["exactness", "empty"]),
    "f(beta) without f(0)": ([torch.sigmoid, torch.tanh, F.gelu, F.silu, F.softplus, F.elu, F.mish], _without_f0, ["exactness", "empty"]),
    "max pool winners of the parts": ([F.max_pool2d], _winners_of_the_relevant_part, ["exactness"]),
    "Shapley form not halved": ([torch.sigmoid, torch.tanh, F.gelu, F.silu, F.softplus, F.elu], _shapley_without_half, ["exactness"]),
}


@pytest.mark.parametrize("name", WRONG_RULES)
def test_the_fuzzer_catches_a_wrong_rule(name, monkeypatch, one_thread):
    """Completeness cannot see these (the irrelevant part is the rest): the reference,
    the empty groups and the other invariants do."""
    funcs, rule, checks = WRONG_RULES[name]
    for func in funcs:
        monkeypatch.setitem(RULES, func, rule)
    failures = fuzz_models.run(range(0, 40), checks={c: fuzz_models.CHECKS[c] for c in checks})
    assert failures, f"the fuzzer missed {name}"
    assert not any(why.startswith("raised") for *_, why in failures)  # wrong numbers, not errors
