"""Captum's own ablation test cases, run with the CD classes in place of Captum's.

The cases are those of Captum's tests for FeatureAblation, LayerFeatureAblation and
NeuronFeatureAblation (``tests/attr/test_feature_ablation.py``,
``tests/attr/layer/test_layer_ablation.py``, ``tests/attr/neuron/test_neuron_ablation.py``
in pytorch/captum) and the entries of its test config (``tests/attr/helpers/test_config.py``)
that use them, written again as a table: model, inputs, arguments, and what CD must do.
Each runs with the Captum class and with the CD class and checks

- the decision: both accept or both refuse (CD with a message that says why), or a
  difference listed, with its reason, in docs/captum_compatibility.md (``DIFFERENCES``);
- the structure: tensor or tuple, lengths, shapes, dtypes;
- the values: equal to Captum's where CD and ablation must agree (paths linear without
  biases), else equal to an independent decomposition of the model
  (reference_captum_models: the documented rules, bias share included).
"""

import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import pytest
import torch
from captum._utils.common import _select_targets, _verify_select_neuron
from captum.attr import FeatureAblation, LayerFeatureAblation, NeuronFeatureAblation, NoiseTunnel
from captum.testing.helpers import basic_models as bm

import reference_captum_models as ref
from captum_cd import ContextualDecomposition, LayerContextualDecomposition, NeuronContextualDecomposition
from captum_cd.attr.errors import DecompositionError

CLASSES = {
    "input": (FeatureAblation, ContextualDecomposition),
    "layer": (LayerFeatureAblation, LayerContextualDecomposition),
    "neuron": (NeuronFeatureAblation, NeuronContextualDecomposition),
}

# Captum behaviours CD does not share (docs/captum_compatibility.md gives each its reason).
# Captum accepts, CD refuses with this error:
REFUSALS = {
    "baselines": (ValueError, "takes no baselines"),
    "integer inputs": (TypeError, "only floating-point inputs can be decomposed"),
    "number outputs": (DecompositionError, r"returned a (float|int); CD needs one output tensor"),
    "softmax output": (DecompositionError, "output is a softmax"),
    "unknown keyword arguments": (TypeError, "unexpected keyword argument"),
}
# Captum refuses (its batched perturbations need an output that grows with the batch);
# CD, which never enlarges the batch, accepts:
ACCEPTED = {"statistic of the batch, several perturbations a pass"}
# Both accept, CD's values differ by design:
VALUES = {"enable_cross_tensor_attribution=False"}
DIFFERENCES = set(REFUSALS) | ACCEPTED | VALUES


@dataclass
class Case:
    name: str
    family: str  # "input", "layer" or "neuron"
    model: Callable[[], Any]  # builds the model: a module of Captum's test models, or None
    inputs: Callable[[], Any]
    kwargs: Any = field(default_factory=dict)  # for attribute, Captum's names (or a function making them)
    layer: Optional[str] = None
    ppe: Tuple[Optional[int], ...] = (None,)  # perturbations_per_eval values, as Captum loops over them
    wrap: Optional[Callable] = None  # model -> the forward function attributed (Captum's lambdas)
    post: Optional[Callable] = None  # what ``wrap`` does to the output, on reference values
    values: Optional[str] = "reference"  # "ablation" (equal to Captum's), "reference" or None
    differs: Optional[str] = None  # a key of DIFFERENCES
    refused: Optional[str] = None  # both refuse: CD's message
    noise_tunnel: Optional[Dict[str, Any]] = None  # NoiseTunnel.attribute arguments
    future: bool = False  # attribute_future, the forward returns a Future


def t(*rows, **kw):
    return lambda: torch.tensor(list(rows), **kw)


def summed(net):
    return lambda *x: torch.sum(net(*x))


def three_inputs():
    return (
        torch.tensor([[23.0, 100.0, 0.0], [20.0, 50.0, 30.0]]),
        torch.tensor([[20.0, 50.0, 30.0], [0.0, 100.0, 0.0]]),
        torch.tensor([[0.0, 100.0, 10.0], [2.0, 10.0, 3.0]]),
    )


def two_inputs_and_third_as_argument():
    return three_inputs()[:2]


def conv_inputs():
    return torch.arange(16, dtype=torch.float).view(1, 1, 4, 4), torch.ones(1, 1, 4, 4)


MASKS3 = lambda: (torch.tensor([[1, 1, 1], [0, 1, 0]]), torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2], [0, 0, 0]]))  # noqa: E731
SCALAR_MASKS = lambda: (torch.tensor(0), torch.tensor(1))  # noqa: E731
ML, MI, CONV1, CONVNET = bm.BasicModel_MultiLayer, bm.BasicModel_MultiLayer_MultiInput, bm.BasicModel_ConvNet_One_Conv, bm.BasicModel_ConvNet
ML_MULTI = lambda: bm.BasicModel_MultiLayer(multi_input_module=True)  # noqa: E731
X1 = t([20.0, 50.0, 30.0], requires_grad=True)
X2 = t([2.0, 10.0, 3.0], [20.0, 50.0, 30.0], requires_grad=True)
TUPLE_TARGETS = [(1, 0, 0), (0, 1, 1), (1, 1, 1), (0, 0, 0)]


def fa(name, model, inputs, target=0, **kw):
    kwargs = {"target": target, **kw.pop("kwargs", {})}
    return Case(name, "input", model, inputs, kwargs, **kw)


def la(name, model, layer, inputs, target=0, **kw):
    kwargs = {"target": target, **kw.pop("kwargs", {})}
    return Case(name, "layer", model, inputs, kwargs, layer=layer, **kw)


def na(name, model, layer, inputs, selector=0, **kw):
    kwargs = {"neuron_selector": selector, **kw.pop("kwargs", {})}
    return Case(name, "neuron", model, inputs, kwargs, layer=layer, **kw)


def config(name, family, model, inputs, layer=None, noise_tunnel=None, **kwargs):
    return Case(f"config-{name}", family, model, inputs, kwargs, layer=layer, noise_tunnel=noise_tunnel)


def stack_of_statistics(net):
    def forward(x):  # three numbers for the whole batch
        out = net(x)
        return torch.stack([out.sum(), out.max(), out.min()])

    return forward


def statistics_reference(value):
    """sum, max and min of the whole output: the max and min gathered at the winners."""
    full = value.full.flatten()
    winners = full.argmax(), full.argmin()
    pick = lambda part: torch.stack([part.sum(), part.flatten()[winners[0]], part.flatten()[winners[1]]])  # noqa: E731
    return ref.V(pick(value.beta), pick(value.gamma), pick(value.full))


def first_row(x):
    return x[0].unsqueeze(0)


FEATURE_ABLATION = [
    fa("simple_ablation", ML, X1, ppe=(1, 2, 3)),
    fa("simple_ablation_int_to_int", bm.BasicModel, t([-3, 1, 2]), ppe=(1, 2, 3), differs="integer inputs"),
    fa("simple_ablation_int_to_int_nt", bm.BasicModel, t([-3.0, 1.0, 2.0]), ppe=(1, 2, 3), noise_tunnel={"stdevs": 1e-10}),
    fa("simple_ablation_int_to_float", bm.BasicModel, t([-3, 1, 2]), ppe=(1, 2, 3), wrap=lambda net: (lambda x: net(x).float()), differs="integer inputs"),
    fa("simple_ablation_with_mask", ML, X1, ppe=(1, 2, 3), kwargs={"feature_mask": torch.tensor([[0, 0, 1]])}),
    fa("simple_ablation_with_baselines", ML, X1, ppe=(1, 2, 3), kwargs={"feature_mask": torch.tensor([[0, 0, 1]]), "baselines": 4}, differs="baselines"),
    fa("simple_ablation_boolean", bm.BasicModelBoolInput, t([True, False, True]), ppe=(1, 2, 3), kwargs={"feature_mask": torch.tensor([[0, 0, 1]])}, differs="integer inputs"),
    fa("simple_ablation_boolean_with_baselines", bm.BasicModelBoolInput, t([True, False, True]), ppe=(1, 2, 3), kwargs={"feature_mask": torch.tensor([[0, 0, 1]]), "baselines": True}, differs="baselines"),
    fa("multi_sample_ablation", ML, X2, ppe=(1, 2, 3)),
    fa("multi_sample_ablation_with_mask", ML, X2, ppe=(1, 2, 3), kwargs={"feature_mask": torch.tensor([[0, 0, 1], [1, 1, 0]])}),
    fa("multi_input_ablation_with_mask", MI, three_inputs, kwargs={"additional_forward_args": (1,), "feature_mask": MASKS3()}),
    fa("multi_input_ablation_with_mask-two_inputs", MI, two_inputs_and_third_as_argument, ppe=(1, 2, 3), kwargs={"additional_forward_args": (three_inputs()[2], 1), "feature_mask": MASKS3()[:2]}),
    fa("multi_input_ablation_with_mask-baselines", MI, three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "feature_mask": MASKS3(), "baselines": (2, 3.0, 4)}, differs="baselines"),
    fa("multi_input_ablation_with_mask_nt", MI, three_inputs, kwargs={"additional_forward_args": (1,), "feature_mask": MASKS3()}, noise_tunnel={"stdevs": 1e-10}),
    fa("multi_input_ablation_with_mask_nt-two_inputs", MI, two_inputs_and_third_as_argument, ppe=(1, 2, 3), kwargs={"additional_forward_args": (three_inputs()[2], 1), "feature_mask": MASKS3()[:2]}, noise_tunnel={"stdevs": 1e-10}),
    fa("multi_input_ablation_with_mask_nt-baselines", MI, three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "feature_mask": MASKS3(), "baselines": (2, 3.0, 4)}, noise_tunnel={"stdevs": 1e-10}, differs="baselines"),
    fa("multi_input_ablation", MI, three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "baselines": (t([3.0, 0.0, 0.0])(), t([0.0, 1.0, 0.0])(), t([1.0, 2.0, 3.0])())}, differs="baselines"),
    fa("multi_input_ablation-per_example_baselines", MI, three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "baselines": (t([3.0, 0.0, 0.0], [3.0, 0.0, 2.0])(), t([0.0, 1.0, 0.0], [0.0, 1.0, 4.0])(), t([3.0, 2.0, 4.0], [1.0, 2.0, 3.0])())}, differs="baselines"),
    fa("simple_multi_input_conv-scalar_masks", CONV1, conv_inputs, ppe=(1, 2, 4, 8, 12, 16), kwargs={"feature_mask": SCALAR_MASKS()}),
    fa("simple_multi_input_conv", CONV1, conv_inputs, ppe=(1, 3, 7, 14)),
    # forward functions that return one number (or row) for the whole batch
    fa("error_perturbations_per_eval_limit_batch_scalar", ML, X2, target=None, ppe=(2,), wrap=lambda net: (lambda x: torch.sum(net(x)).item()), refused="returned a float"),
    fa("error_agg_mode_arbitrary_output", ML, X2, target=None, ppe=(2,), wrap=stack_of_statistics, post=statistics_reference, differs="statistic of the batch, several perturbations a pass"),
    fa("error_agg_mode_incorrect_fm", None, t([1, 2, 3], [4, 5, 6]), target=None, kwargs={"feature_mask": torch.tensor([[0, 1, 2], [0, 0, 1]])}, wrap=lambda _: first_row, values=None, refused="only floating-point inputs"),
    fa("error_agg_mode_incorrect_fm-float_inputs", None, t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]), target=None, kwargs={"feature_mask": torch.tensor([[0, 1, 2], [0, 0, 1]])}, wrap=lambda _: first_row, values=None, refused="first dimension 1"),
    fa("empty_sparse_features", bm.BasicModelWithSparseInputs, lambda: (t([1.0, -2.0, 3.0], [2.0, -1.0, 3.0])(), torch.tensor([])), target=None, values="ablation"),
    fa("sparse_features", bm.BasicModelWithSparseInputs, lambda: (t([1.0, -2.0, 3.0], [2.0, -1.0, 3.0])(), torch.tensor([1, 7, 2, 4, 5, 3, 6])), target=None, differs="integer inputs"),
    fa("unassociated_output_3d_tensor", None, lambda: torch.randn(10, 5), target=None, kwargs={"feature_mask": torch.arange(5).unsqueeze(0)}, wrap=lambda _: (lambda x: torch.ones(1, 5, 3, 2)), values="ablation"),
    fa("single_inp_ablation_multi_output_aggr", None, t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]), target=None, kwargs={"feature_mask": torch.tensor([[0, 1, 2]])}, wrap=lambda _: first_row, values="ablation"),
    fa("single_inp_ablation_multi_output_aggr_mask_none", None, t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]), target=None, wrap=lambda _: first_row, values="ablation"),
    fa("single_inp_ablation_multi_output_aggr_non_standard", None, t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]), target=None, kwargs={"feature_mask": torch.tensor([[0, 0, 1]])}, wrap=lambda _: first_row, values="ablation"),
    fa("simple_ablation_with_show_progress", ML, X1, ppe=(1, 2, 3), kwargs={"show_progress": True}),
    fa("simple_ablation_with_mask_and_show_progress", ML, X1, ppe=(1, 2, 3), kwargs={"feature_mask": torch.tensor([[0, 0, 1]]), "show_progress": True}),
    # Captum 0.9: attribute_future, ids shared across inputs, several outputs per example,
    # keyword arguments for subclasses
    fa("simple_ablation-future", bm.BasicModel_MultiLayer_with_Future, X1, ppe=(1, 2, 3), future=True),
    fa("multi_input_ablation_with_mask-future", bm.BasicModel_MultiLayer_MultiInput_with_Future, three_inputs, kwargs={"additional_forward_args": (1,), "feature_mask": MASKS3()}, future=True),
    fa("simple_ablation_boolean-future", bm.BasicModelBoolInput_with_Future, t([True, False, True]), kwargs={"feature_mask": torch.tensor([[0, 0, 1]])}, future=True, differs="integer inputs"),
    fa("multi_input_ablation_with_mask_dupe_feature_idx", MI, three_inputs, kwargs={"additional_forward_args": (1,), "feature_mask": (torch.tensor([[1, 1, 1], [0, 1, 0]]), torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2], [0, 0, 0]]))}),
    fa("cross_tensor_attribution-enabled", MI, three_inputs, ppe=(1, 2), kwargs={"additional_forward_args": (1,), "feature_mask": MASKS3(), "enable_cross_tensor_attribution": True}),
    fa("cross_tensor_attribution-disabled", MI, three_inputs, ppe=(1, 2), kwargs={"additional_forward_args": (1,), "feature_mask": MASKS3(), "enable_cross_tensor_attribution": False}, differs="enable_cross_tensor_attribution=False"),
    fa("several_outputs_per_example_without_target", ML, lambda: torch.randn(4, 3), target=None, ppe=(1, 5)),
    fa("unknown_keyword_argument", ML, X1, kwargs={"sliding_window_shapes": (2,)}, differs="unknown keyword arguments"),
]
for kind, wrap, post in [
    ("float", lambda net: (lambda *x: torch.sum(net(*x)).item()), None),
    ("tensor_0d", summed, lambda v: v.map(torch.sum)),
    ("tensor_1d", lambda net: (lambda *x: torch.sum(net(*x)).reshape(1)), lambda v: v.map(lambda u: u.sum().reshape(1))),
    ("tensor_int", lambda net: (lambda *x: int(torch.sum(net(*x)).item())), None),
]:
    numbers = {"differs": "number outputs"} if post is None else {}
    scalar = {"target": None, "wrap": wrap, "post": post, **numbers}
    FEATURE_ABLATION += [
        fa(f"single_ablation_batch_scalar_{kind}", ML, t([2.0, 10.0, 3.0], requires_grad=True), kwargs={"feature_mask": torch.tensor([[0, 0, 1]])}, **scalar),
        fa(f"multi_sample_ablation_batch_scalar_{kind}", ML, X2, kwargs={"feature_mask": torch.tensor([[0, 0, 1]])}, **scalar),
        fa(f"multi_inp_ablation_batch_scalar_{kind}", MI, three_inputs, kwargs={"additional_forward_args": (1,), "feature_mask": (torch.tensor([[1, 1, 1]]), torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2]]))}, **scalar),
    ]

LAYER_ABLATION = [
    la("simple_ablation_with_mask", ML, "linear0", X1, ppe=(1, 2, 3), kwargs={"layer_mask": torch.tensor([[0, 0, 1]]), "attribute_to_layer_input": True}),
    la("multi_input_ablation-input", MI, "model.linear1", three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "layer_baselines": t([1.0, 2.0, 3.0])(), "attribute_to_layer_input": True}, differs="baselines"),
    la("multi_input_ablation-output", MI, "model.linear0", three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "layer_baselines": t([1.0, 2.0, 3.0])()}, differs="baselines"),
    la("multi_input_ablation_with_layer_mask-input", MI, "model.linear1", three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "layer_baselines": t([1.0, 2.0, 3.0])(), "layer_mask": torch.tensor([[0, 1, 0], [0, 1, 2]]), "attribute_to_layer_input": True}, differs="baselines"),
    la("multi_input_ablation_with_layer_mask-output", MI, "model.linear0", three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "layer_baselines": t([1.0, 2.0, 3.0])(), "layer_mask": torch.tensor([[0, 1, 0], [0, 1, 2]])}, differs="baselines"),
    la("simple_multi_input_conv_intermediate", lambda: CONV1(inplace=True), "relu1", conv_inputs, ppe=(1, 2, 4, 8, 12, 16)),
    la("simple_multi_input_conv_intermediate-baselines", lambda: CONV1(inplace=True), "relu1", conv_inputs, ppe=(1, 2, 4, 8, 12, 16), kwargs={"layer_baselines": torch.tensor([[[-4.0, -13.0], [-2.0, -2.0]], [[0, 0], [0.0, 0.0]]]), "attribute_to_layer_input": True}, differs="baselines"),
    la("simple_multi_input_conv_intermediate-layer_mask", lambda: CONV1(inplace=True), "relu1", conv_inputs, ppe=(1, 2, 4), kwargs={"layer_mask": torch.tensor([[[[0, 0], [1, 1]], [[2, 2], [3, 3]]]])}),
    la("simple_multi_output_ablation", ML_MULTI, "multi_relu", t([0.0, 6.0, 0.0])),
    la("simple_multi_output_input_ablation", ML_MULTI, "multi_relu", t([0.0, 6.0, 0.0]), kwargs={"attribute_to_layer_input": True}),
    # the cases with baselines above, without them: what CD can compare
    la("multi_input_ablation-input-no_baselines", MI, "model.linear1", three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "attribute_to_layer_input": True}),
    la("multi_input_ablation-output-no_baselines", MI, "model.linear0", three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,)}),
    la("multi_input_ablation_with_layer_mask-input-no_baselines", MI, "model.linear1", three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "layer_mask": torch.tensor([[0, 1, 0], [0, 1, 2]]), "attribute_to_layer_input": True}),
    la("simple_multi_input_conv_intermediate-input-no_baselines", lambda: CONV1(inplace=True), "relu1", conv_inputs, ppe=(1, 2, 4, 8, 12, 16), kwargs={"attribute_to_layer_input": True}),
]

NEURON_ABLATION = [
    na("simple_ablation_with_mask", ML, "linear2", X1, ppe=(1, 2, 3), kwargs={"feature_mask": torch.tensor([[0, 0, 1]])}),
    na("multi_sample_ablation_with_mask", ML, "linear2", X2, ppe=(1, 2, 3), kwargs={"feature_mask": torch.tensor([[0, 0, 1], [1, 1, 0]])}),
    na("multi_sample_ablation_with_selector_fn", ML, "linear2", X2, selector=lambda x: torch.sum(x, dim=1), ppe=(1, 2, 3), kwargs={"feature_mask": torch.tensor([[0, 0, 1], [1, 1, 0]])}),
    na("multi_sample_ablation_with_slice", ML, "linear2", X2, selector=(slice(0, 2, 1),), ppe=(1, 2, 3), kwargs={"feature_mask": torch.tensor([[0, 0, 1], [1, 1, 0]])}),
    na("multi_input_ablation_with_mask", MI, "model.linear2", three_inputs, kwargs={"additional_forward_args": (1,), "feature_mask": MASKS3()}),
    na("multi_input_ablation_with_mask-two_inputs", MI, "model.linear2", two_inputs_and_third_as_argument, ppe=(1, 2, 3), kwargs={"additional_forward_args": (three_inputs()[2], 1), "feature_mask": MASKS3()[:2]}),
    na("multi_input_ablation_with_mask-baselines", MI, "model.linear2", three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "feature_mask": MASKS3(), "baselines": (2, 3.0, 4)}, differs="baselines"),
    na("multi_input_ablation", MI, "model.linear2", three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "baselines": (t([3.0, 0.0, 0.0])(), t([0.0, 1.0, 0.0])(), t([1.0, 2.0, 3.0])())}, differs="baselines"),
    na("multi_input_ablation-per_example_baselines", MI, "model.linear2", three_inputs, ppe=(1, 2, 3), kwargs={"additional_forward_args": (1,), "baselines": (t([3.0, 0.0, 0.0], [3.0, 0.0, 2.0])(), t([0.0, 1.0, 0.0], [0.0, 1.0, 4.0])(), t([3.0, 2.0, 4.0], [1.0, 2.0, 3.0])())}, differs="baselines"),
    na("simple_multi_input_conv-scalar_masks", CONV1, "relu2", conv_inputs, ppe=(1, 2, 4, 8, 12, 16), kwargs={"feature_mask": SCALAR_MASKS()}),
    na("simple_multi_input_conv", CONV1, "relu2", conv_inputs, ppe=(1, 3, 7, 14)),
    na("simple_multi_input_conv_intermediate", lambda: CONV1(inplace=True), "relu1", conv_inputs, selector=(1, 0, 0), ppe=(1, 2, 4, 8, 12, 16), kwargs={"feature_mask": SCALAR_MASKS()}),
    na("simple_multi_input_conv_intermediate-input", lambda: CONV1(inplace=True), "relu1", conv_inputs, selector=(1, 0, 0), ppe=(1, 2, 4, 8, 12, 16), kwargs={"feature_mask": SCALAR_MASKS(), "attribute_to_neuron_input": True}),
    na("simple_multi_input_conv_intermediate-input-no_mask", lambda: CONV1(inplace=True), "relu1", conv_inputs, selector=(1, 0, 0), ppe=(1, 3, 7, 14), kwargs={"attribute_to_neuron_input": True}),
]


def multi_input_config(name, family, layer=None, n=12, noise_tunnel=None, **kwargs):
    """Two inputs and a third as an extra argument, drawn when the case runs."""
    inputs = lambda: (10 * torch.randn(n, 3), 5 * torch.randn(n, 3))  # noqa: E731
    arguments = lambda: {"additional_forward_args": (2 * torch.randn(n, 3), 5), **kwargs}  # noqa: E731
    return Case(f"config-{name}", family, MI, inputs, arguments, layer=layer, noise_tunnel=noise_tunnel)


NT = {"nt_samples": 20, "stdevs": 0.0}
TEST_CONFIG = [
    config("basic_single_target", "input", ML, lambda: torch.randn(4, 3), target=1),
    multi_input_config("basic_multi_input", "input", target=0, n=12),
    config("basic_multi_target", "input", ML, lambda: torch.randn(4, 3), target=[0, 1, 1, 0]),
    multi_input_config("basic_multi_input_multi_target", "input", target=[0, 1, 1, 0, 0, 1], n=6),
    config("basic_multiple_tuple_target", "input", ML, lambda: torch.randn(4, 3), target=TUPLE_TARGETS, additional_forward_args=(None, True)),
    config("basic_tensor_single_target", "input", ML, lambda: torch.randn(4, 3), target=torch.tensor([0])),
    config("basic_tensor_multi_target", "input", ML, lambda: torch.randn(4, 3), target=torch.tensor([1, 1, 0, 0])),
    config("basic_multiple_tuple_target_with_baselines", "input", ML, lambda: torch.randn(4, 3), baselines=0.5 * torch.randn(4, 3), target=TUPLE_TARGETS, additional_forward_args=(None, True)),
    config("basic_tensor_single_target_with_baselines", "input", ML, lambda: torch.randn(4, 3), baselines=0.5 * torch.randn(4, 3), target=torch.tensor([0])),
    multi_input_config("basic_multi_input_multi_target_nt", "input", noise_tunnel=NT, target=[0, 1, 1, 0, 0, 1], n=6),
    config("basic_multiple_target_with_baseline_nt", "input", ML, lambda: torch.randn(4, 3), noise_tunnel=NT, target=[0, 1, 1, 0]),
    config("basic_multiple_tuple_target_nt", "input", ML, lambda: torch.randn(4, 3), noise_tunnel=NT, target=TUPLE_TARGETS, additional_forward_args=(None, True)),
    config("basic_single_tensor_target_nt", "input", ML, lambda: torch.randn(4, 3), noise_tunnel=NT, target=torch.tensor([0])),
    config("basic_multi_tensor_target_nt", "input", ML, lambda: torch.randn(4, 3), noise_tunnel=NT, target=torch.tensor([0, 1, 1, 0])),
    config("basic_multi_tensor_target_batched_nt", "input", ML, lambda: torch.randn(4, 3), noise_tunnel={**NT, "nt_samples_batch_size": 2}, target=torch.tensor([0, 1, 1, 0])),
    config("conv_with_perturbations_per_eval", "input", CONVNET, lambda: torch.arange(400).view(4, 1, 10, 10).float(), target=0, perturbations_per_eval=20),
    config("basic_multiple_tuple_target_with_perturbations_per_eval", "input", ML, lambda: torch.randn(4, 3), target=TUPLE_TARGETS, additional_forward_args=(None, True), perturbations_per_eval=2),
    config("conv_layer_single_target", "layer", CONVNET, lambda: 100 * torch.randn(4, 1, 10, 10), layer="conv2", target=1),
    config("basic_layer_in_place", "layer", lambda: ML(inplace=True), lambda: torch.randn(4, 3), layer="relu", target=0),
    config("basic_layer_multi_output", "layer", ML_MULTI, lambda: torch.randn(4, 3), layer="multi_relu", target=0),
    multi_input_config("basic_layer_multi_input", "layer", layer="model.relu", target=0, n=12),
    config("basic_layer_multiple_target", "layer", ML, lambda: torch.randn(4, 3), layer="relu", target=[0, 1, 1, 0]),
    config("basic_layer_tensor_multiple_target", "layer", ML, lambda: torch.randn(4, 3), layer="relu", target=torch.tensor([0, 1, 1, 0])),
    config("basic_layer_multiple_tuple_target", "layer", ML, lambda: torch.randn(4, 3), layer="relu", target=TUPLE_TARGETS, additional_forward_args=(None, True)),
    multi_input_config("basic_layer_multi_input_with_perturbations_per_eval", "layer", layer="model.relu", target=0, perturbations_per_eval=2, n=12),
    config("basic_layer_multi_output_perturbations_per_eval", "layer", ML_MULTI, lambda: torch.randn(4, 3), layer="multi_relu", target=0, perturbations_per_eval=2),
    config("conv_layer_with_perturbations_per_eval", "layer", CONVNET, lambda: 100 * torch.randn(4, 1, 10, 10), layer="conv2", target=1, perturbations_per_eval=20),
    config("basic_neuron", "neuron", ML, lambda: torch.randn(4, 3), layer="relu", neuron_selector=3),
    config("conv_neuron", "neuron", CONVNET, lambda: 100 * torch.randn(4, 1, 10, 10), layer="conv2", neuron_selector=(0, 1, 0)),
    multi_input_config("basic_neuron_multi_input", "neuron", layer="model.relu", neuron_selector=(3,), n=12),
    config("conv_neuron_with_perturbations_per_eval", "neuron", CONVNET, lambda: torch.arange(400).view(4, 1, 10, 10).float(), layer="conv2", perturbations_per_eval=20, neuron_selector=(0, 1, 0)),
    multi_input_config("basic_neuron_multiple_input_with_baselines_and_perturbations_per_eval", "neuron", layer="model.relu", baselines=(10 * torch.randn(12, 3), 5 * torch.randn(12, 3)), neuron_selector=(3,), perturbations_per_eval=2, n=12),
    multi_input_config("basic_neuron_multi_input_function_selector", "neuron", layer="model.relu", neuron_selector=lambda x: torch.sum(x, 1), n=12),
    config("conv_neuron_slice_selector", "neuron", CONVNET, lambda: 100 * torch.randn(4, 1, 10, 10), layer="conv2", neuron_selector=(slice(0, 2, 1), 1, slice(0, 2, 1))),
]
for case in TEST_CONFIG:
    if "baselines" in (case.kwargs() if callable(case.kwargs) else case.kwargs):
        case.differs = "baselines"
    if case.model is CONVNET and case.family != "neuron":
        case.differs = "softmax output"

CASES = FEATURE_ABLATION + LAYER_ABLATION + NEURON_ABLATION + TEST_CONFIG


# ---------------------------------------------------------------------- running a case


def materialize(case: Case):
    """The case's model, inputs and arguments, drawn from the same seed every time."""
    torch.manual_seed(0)
    net = case.model() if case.model is not None else None
    inputs = case.inputs()
    kwargs = case.kwargs() if callable(case.kwargs) else dict(case.kwargs)
    return net, inputs, kwargs


def attribute(case: Case, cls, ppe):
    net, inputs, kwargs = materialize(case)
    forward = case.wrap(net) if case.wrap is not None else net
    args = (forward,) if case.layer is None else (forward, operator.attrgetter(case.layer)(net))
    method = cls(*args)
    if ppe is not None:
        kwargs["perturbations_per_eval"] = ppe
    if case.noise_tunnel is not None:
        return NoiseTunnel(method).attribute(inputs, **case.noise_tunnel, **kwargs)
    if case.future:
        return method.attribute_future(inputs, **kwargs).wait()
    return method.attribute(inputs, **kwargs)


def outcome(run):
    try:
        return run(), None
    except Exception as error:  # noqa: BLE001 - the decision is what is compared
        return None, error


def structure(result):
    tensors = result if isinstance(result, tuple) else (result,)
    return type(result).__name__, [(tuple(x.shape), x.dtype) for x in tensors]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.family}-{c.name}" for c in CASES])
def test_cd_in_place_of_captum(case, one_thread):
    assert case.differs is None or case.differs in DIFFERENCES
    captum_class, cd_class = CLASSES[case.family]
    for ppe in case.ppe:
        expected, captum_error = outcome(lambda: attribute(case, captum_class, ppe))
        result, cd_error = outcome(lambda: attribute(case, cd_class, ppe))
        if case.differs in REFUSALS:
            kind, message = REFUSALS[case.differs]
            assert captum_error is None, captum_error
            assert isinstance(cd_error, kind) and re.search(message, str(cd_error)), cd_error
            continue
        if case.refused is not None:
            assert captum_error is not None, "Captum accepts"
            assert isinstance(cd_error, (ValueError, TypeError, DecompositionError)), cd_error
            assert re.search(case.refused, str(cd_error)), cd_error
            continue
        if case.differs in ACCEPTED:
            assert captum_error is not None, "Captum accepts"
        else:
            assert captum_error is None, captum_error
        assert cd_error is None, cd_error
        if expected is not None:
            assert structure(result) == structure(expected)
        check_values(case, result, expected)


def check_values(case: Case, result, expected) -> None:
    if case.values == "ablation":
        torch.testing.assert_close(result, expected)
    elif case.values == "reference":
        reference = reference_attributions(case)
        if case.differs == "enable_cross_tensor_attribution=False":
            reference = reference_attributions(case, across_inputs=False)
        torch.testing.assert_close(result, reference, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- the reference


def reference_attributions(case: Case, across_inputs: bool = True):
    """The attributions from reference_captum_models: each group decomposed alone, its
    relevant part at the output (at the neuron) selected by the target and put in every
    feature of the group, one row per element of the selected output."""
    net, given, kwargs = materialize(case)
    inputs = given if isinstance(given, tuple) else (given,)
    args = kwargs.get("additional_forward_args") or ()
    args = args if isinstance(args, tuple) else (args,)
    at_input = kwargs.get("attribute_to_layer_input") or kwargs.get("attribute_to_neuron_input")
    point = f"{case.layer}.{'in' if at_input else 'out'}" if case.layer else None
    start, stop = (point, None) if case.family == "layer" else ("input", point)
    values = inputs
    if case.family == "layer":  # the layer's value, where the groups are
        at_layer = ref.decompose(net, inputs, args, [torch.ones(())] * len(inputs), stop=point)
        values = tuple(v.full for v in (at_layer if isinstance(at_layer, tuple) else (at_layer,)))
    ids = kwargs.get("layer_mask" if case.family == "layer" else "feature_mask")
    ids = default_ids(values) if ids is None else (ids if isinstance(ids, tuple) else (ids,))
    if not across_inputs:
        ids = tuple(m * len(ids) + i for i, m in enumerate(ids))
    scores = {}
    for g in torch.unique(torch.cat([m.flatten() for m in ids])).tolist():
        out = ref.decompose(net, inputs, args, [(m == g).to(v.dtype) for m, v in zip(ids, values)], start, stop)
        if case.family == "neuron":
            selected = _verify_select_neuron(tuple(v.beta for v in (out if isinstance(out, tuple) else (out,))), kwargs["neuron_selector"])
        else:
            out = case.post(out) if case.post is not None else out
            target = kwargs.get("target")
            selected = out.beta if target is None else _select_targets(out.beta, target)
        scores[g] = selected.flatten()
    n = next(iter(scores.values())).numel()
    attributions = tuple(spread(m, v, scores, n) for m, v in zip(ids, values))
    as_tuple = len(values) > 1 if case.family == "layer" else isinstance(given, tuple)
    return attributions if as_tuple else attributions[0]


def default_ids(values):
    """Captum's default groups: every scalar feature its own, numbered across the inputs."""
    ids, start = [], 0
    for x in values:
        count = x[0:1].numel()
        ids.append(start + torch.arange(count).reshape(x[0:1].shape))
        start += count
    return tuple(ids)


def spread(ids, value, scores, n):
    """Row r of the attributions: each feature gets the score of its group at output element r."""
    attributions = torch.zeros(n, *value.shape[1:], dtype=value.dtype)
    if value.numel() == 0:
        return attributions
    full = torch.broadcast_to(ids, value.shape)
    rows = full if n == value.shape[0] else full[:1].expand(n, *value.shape[1:])
    for g, score in scores.items():
        attributions = torch.where(rows == g, score.view(n, *[1] * (value.ndim - 1)).to(value.dtype), attributions)
    return attributions
