"""An independent contextual decomposition of the models of Captum's own tests
(``captum.testing.helpers.basic_models``), for tests/test_captum_suite.py.

Each model's forward is written out again on values that carry the relevant part, the
irrelevant part and the ordinary activation separately (never ``gamma = z - beta``),
with the layer steps of reference_cd (docs/methods.md: biases split in proportion to
magnitude, ReLU's ``beta' = relu(beta)``, max pooling at the ordinary activation's
winners; a constant added is a bias, linear operations act on each part).

The decomposition may start at the inputs or at a named point of the forward
(``"linear1.in"``, ``"multi_relu.out"``, ...) and end at the output or at such a point:
this is how the layer and neuron methods see the models.
"""

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from captum.testing.helpers import basic_models as bm
from torch import nn, Tensor

from reference_cd import layer_step, split_bias


class V:
    """A decomposed value: relevant part, irrelevant part, ordinary activation."""

    def __init__(self, beta: Tensor, gamma: Tensor, full: Tensor):
        self.beta, self.gamma, self.full = beta, gamma, full

    def map(self, fn: Callable[[Tensor], Tensor]) -> "V":  # a linear operation
        return V(fn(self.beta), fn(self.gamma), fn(self.full))

    def __add__(self, other: Union["V", Tensor, float]) -> "V":
        if isinstance(other, V):
            return V(self.beta + other.beta, self.gamma + other.gamma, self.full + other.full)
        beta, gamma = split_bias(self.beta, self.gamma, torch.as_tensor(other, dtype=self.full.dtype))
        return V(beta, gamma, self.full + other)

    def __rsub__(self, constant: float) -> "V":  # constant - value
        return self.map(torch.neg) + constant


def layer(module: nn.Module, value: V) -> V:
    return V(*layer_step(module, value.beta, value.gamma, value.full), module(value.full.clone()))


def relu(value: V) -> V:
    beta = F.relu(value.beta)
    return V(beta, F.relu(value.beta + value.gamma) - beta, F.relu(value.full))


class Reached(Exception):
    def __init__(self, value):
        super().__init__()
        self.value = value


class Points:
    """Where the decomposition starts (the values there split by ``masks``, one per
    tensor) and where it ends."""

    def __init__(self, masks: Sequence[Tensor], start: str = "input", stop: Optional[str] = None):
        self.masks, self.start, self.stop = tuple(masks), start, stop

    def __call__(self, name: str, value):
        if name == self.start:
            values = value if isinstance(value, tuple) else (value,)
            split = tuple(V(m * v.full, v.full - m * v.full, v.full) for m, v in zip(self.masks, values))
            value = split if isinstance(value, tuple) else split[0]
        if name == self.stop:
            raise Reached(value)
        return value


def multilayer(net: bm.BasicModel_MultiLayer, at: Points, x: V, add_input=None, multidim_output=False) -> V:
    h = x if add_input is None else x + add_input
    h = at("linear0.out", layer(net.linear0, at("linear0.in", h)))
    lin1 = at("linear1.out", layer(net.linear1, at("linear1.in", h)))
    if net.multi_input_module:
        pair = at("multi_relu.in", (lin1, layer(net.linear1_alt, h)))
        first, second = at("multi_relu.out", (relu(pair[0]), relu(pair[1])))
        hidden = first + second
    else:
        hidden = at("relu.out", relu(at("relu.in", lin1)))
    out = at("linear2.out", layer(net.linear2, at("linear2.in", hidden)))
    if multidim_output:
        mid = V(*(torch.stack((t, 2 * t), dim=2) for t in (out.beta, out.gamma, out.full)))
        out = V(*(torch.stack((t, 4 * t), dim=3) for t in (mid.beta, mid.gamma, mid.full)))
    return out


def multi_input(net: bm.BasicModel_MultiLayer_MultiInput, at: Points, x1: V, x2: V, x3, scale) -> V:
    total = x1 + x2 + x3  # x3 may be an extra argument: a constant, split as a bias
    return multilayer(net.model, lambda name, value: at("model." + name, value), total.map(lambda t: scale * t))


def one_conv(net: bm.BasicModel_ConvNet_One_Conv, at: Points, x: V, x2: Optional[V] = None) -> V:
    h = x if x2 is None else x + x2
    h = at("conv1.out", layer(net.conv1, at("conv1.in", h)))
    h = at("relu1.out", relu(at("relu1.in", h)))
    h = layer(net.fc1, h.map(lambda t: t.reshape(-1, 8)))
    return at("relu2.out", relu(at("relu2.in", h)))


def convnet(net: bm.BasicModel_ConvNet, at: Points, x: V) -> V:
    """Up to fc2: the model's output is a softmax, which CD does not decompose."""
    h = layer(net.pool1, relu(layer(net.conv1, x)))
    h = at("conv2.out", layer(net.conv2, at("conv2.in", h)))
    h = layer(net.pool2, relu(h)).map(lambda t: t.reshape(-1, 4))
    return layer(net.fc2, relu(layer(net.fc1, h)))


def clamp_one(net: bm.BasicModel, at: Points, x: V) -> V:
    """``1 - relu(1 - x)``: two constants added, each split as a bias."""
    return 1 - relu(1 - x)


def sparse_inputs(net: bm.BasicModelWithSparseInputs, at: Points, x: V, sparse: V) -> V:
    out = layer(net.lin1, x)
    if sparse.full.numel():
        out = out + sparse.map(lambda t: t[0])
    return out.map(torch.sum)


FORWARDS = {
    bm.BasicModel_MultiLayer: multilayer,
    bm.BasicModel_MultiLayer_with_Future: multilayer,  # the same model, its output handed back as a Future
    bm.BasicModel_MultiLayer_MultiInput: multi_input,
    bm.BasicModel_MultiLayer_MultiInput_with_Future: multi_input,
    bm.BasicModel_ConvNet_One_Conv: one_conv,
    bm.BasicModel_ConvNet: convnet,
    bm.BasicModel: clamp_one,
    bm.BasicModelWithSparseInputs: sparse_inputs,
}


def decompose(net: nn.Module, inputs, args, masks, start: str = "input", stop: Optional[str] = None):
    """The decomposition of ``net`` on ``inputs`` (and further arguments ``args``) for the
    group ``masks`` at ``start``: a :class:`V` at ``stop`` (a tuple of them for a tuple
    value), or at the output."""
    values = tuple(V(torch.zeros_like(x), x, x) for x in inputs)  # nothing relevant before the start
    at = Points(masks, start, stop)
    with torch.no_grad():
        try:
            return FORWARDS[type(net)](net, at, *at("input", values), *args)
        except Reached as reached:
            return reached.value
