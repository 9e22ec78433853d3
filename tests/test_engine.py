"""The engine follows models as people write them, and says clearly what it cannot do."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import captum_cd
from captum_cd import ContextualDecomposition, DecompositionError, UnsupportedOperationError
from captum_cd.attr.rules.registry import RULES


def assert_complete(model, x, masks, **kwargs):
    rel, irrel = ContextualDecomposition(model, **kwargs).decompose(x, masks)
    out = model(x)
    assert rel.shape == (masks.shape[0], *out.shape)
    torch.testing.assert_close(rel + irrel, out.expand_as(rel), atol=1e-5, rtol=1e-5)
    return rel, irrel


class Functional(nn.Module):
    """F.relu and F.max_pool2d in forward, x.view, a module used twice, control flow."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        for _ in range(2):  # the same module twice
            x = F.relu(self.conv2(x))
        if x.sum() > 0:  # data-dependent control flow sees the real activation
            x = x * 2.0
        x = F.max_pool2d(x, 2)
        return self.fc(x.view(x.size(0), -1))


class Residual(nn.Module):
    """Residual additions (+ and +=), in-place ReLU, BatchNorm, global pooling, indexing."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1))
        self.down = nn.Conv2d(8, 16, 1, stride=2)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16 + 2, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        identity = x
        x = self.block(x)
        x += identity
        x = F.relu(x, inplace=True)
        x = self.bn(self.down(x)) + F.avg_pool2d(torch.cat([x, x], dim=1), 2)
        pooled = x.mean((2, 3))
        extra = x[:, :2].flatten(2).amax(-1)
        return self.head(torch.cat([pooled, extra], dim=1))


class Transformerish(nn.Module):
    """LayerNorm, GELU, a matmul with a parameter, transpose/reshape, a positional constant."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(6, 8))
        self.ln = nn.LayerNorm(8)
        self.mix = nn.Parameter(torch.randn(8, 8) / 3)
        self.ff = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        x = x + self.pos
        x = x + self.ff(self.ln(x @ self.mix))
        x = x.transpose(1, 2).reshape(x.shape[0], 8, 6).transpose(1, 2)
        return self.out(x.mean(1))


@pytest.mark.parametrize(
    "model, shape",
    [(Functional, (2, 3, 16, 16)), (Residual, (2, 3, 8, 8)), (Transformerish, (3, 6, 8))],
)
def test_complete_on_models_as_written(model, shape):
    torch.manual_seed(1)
    net = model().eval()
    x = torch.randn(shape)
    masks = (torch.rand(4, *shape[1:]) > 0.5).float()
    rel, irrel = assert_complete(net, x, masks)
    # The group of all features gets everything but biases: the empty group gets 0.
    rel_empty, _ = ContextualDecomposition(net).decompose(x, torch.zeros(1, *shape[1:]))
    assert rel_empty.abs().max() < 1e-6


def test_in_place_relu_and_residual_do_not_touch_the_user_model_or_input():
    net = Residual().eval()
    x = torch.randn(2, 3, 8, 8)
    x_before = x.clone()
    flags = [m.inplace for m in net.modules() if hasattr(m, "inplace")]
    assert_complete(net, x, torch.ones(1, 3, 8, 8))
    assert torch.equal(x, x_before)
    assert flags == [m.inplace for m in net.modules() if hasattr(m, "inplace")]


def test_masks_broadcast_over_channels_and_per_example():
    net = Functional().eval()
    x = torch.randn(2, 3, 16, 16)
    shared = (torch.rand(3, 1, 16, 16) > 0.5).float()
    rel_shared, _ = assert_complete(net, x, shared)
    per_example = shared[:, None].expand(3, 2, 3, 16, 16)
    rel_per_example, _ = ContextualDecomposition(net).decompose(x, per_example)
    torch.testing.assert_close(rel_shared, rel_per_example)


def test_groups_are_batched_and_equal_single_group_calls():
    net = Functional().eval()
    x = torch.randn(2, 3, 16, 16)
    masks = (torch.rand(5, 1, 16, 16) > 0.5).float()
    cd = ContextualDecomposition(net)
    rel, _ = cd.decompose(x, masks)
    for g in range(5):
        single, _ = cd.decompose(x, masks[g : g + 1])
        torch.testing.assert_close(rel[g], single[0], atol=1e-6, rtol=1e-6)


def test_tuple_inputs_and_additional_forward_args():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(2, 3)

        def forward(self, x, y, scale):
            return torch.tanh(self.a(x) + self.b(y)) * scale

    net = TwoInputs()
    x, y = torch.randn(3, 4), torch.randn(3, 2)
    masks = (torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 0]]), torch.tensor([[0.0, 0], [1, 1]]))
    rel, irrel = ContextualDecomposition(net).decompose((x, y), masks, additional_forward_args=(2.0,))
    torch.testing.assert_close(rel + irrel, net(x, y, 2.0).expand_as(rel))


def test_unsupported_function_names_itself_and_the_call_site():
    class UsesCumprod(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.cumprod(self.fc(x), dim=1)

    with pytest.raises(UnsupportedOperationError) as error:
        ContextualDecomposition(UsesCumprod()).decompose(torch.randn(2, 4), torch.ones(1, 4))
    message = str(error.value)
    assert "torch.cumprod" in message
    assert "test_engine.py" in message and "forward" in message
    assert "register_rule" in message


def test_unsupported_function_inside_a_submodule_names_the_module():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.logcumsumexp(x, 1)

    net = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), Odd()))
    with pytest.raises(UnsupportedOperationError, match=r"module '1\.1' \(Odd\)"):
        ContextualDecomposition(net).decompose(torch.randn(2, 3), torch.ones(1, 3))


def test_softmax_output_is_refused_with_how_to_and_stop_at_softmax_decomposes_the_logits():
    net = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
    x = torch.randn(2, 4)
    with pytest.raises(DecompositionError, match="stop_at_softmax=True"):
        ContextualDecomposition(net).decompose(x, torch.ones(1, 4))
    rel, irrel = ContextualDecomposition(net, stop_at_softmax=True).decompose(x, torch.ones(1, 4))
    torch.testing.assert_close(rel + irrel, net[0](x).expand_as(rel))


def test_softmax_in_the_middle_is_a_constant_weight():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.v = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            weights = (self.q(x) @ x.transpose(1, 2)).softmax(-1)
            return (weights @ self.v(x)).sum(1)

    net = Attention()
    x = torch.randn(2, 5, 4)
    assert_complete(net, x, (torch.rand(3, 5, 1) > 0.5).float().expand(3, 5, 4))


@pytest.mark.parametrize("layer", [nn.Dropout(0.3), nn.BatchNorm1d(4)])
def test_training_mode_is_refused_and_the_mode_is_left_alone(layer):
    net = nn.Sequential(nn.Linear(4, 4), layer, nn.Linear(4, 2)).train()
    with pytest.raises(DecompositionError, match=r"model\.eval\(\)"):
        ContextualDecomposition(net).decompose(torch.randn(3, 4), torch.ones(1, 4))
    assert all(m.training for m in net.modules())


def test_the_user_model_is_left_as_it_was_also_when_the_forward_raises():
    net = Residual().eval()
    net.stem.weight.requires_grad_(False)
    state = copy.deepcopy(net.state_dict())
    hook_counts = lambda: [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()]  # noqa: E731
    hooks_before = hook_counts()
    replacement = lambda module, x: (_ for _ in ()).throw(RuntimeError("boom"))  # noqa: E731
    cd = ContextualDecomposition(net, module_rules={"block": {F.relu: captum_cd.rules.shapley_activation}, nn.BatchNorm2d: replacement})
    with pytest.raises(RuntimeError, match="boom"):
        cd.decompose(torch.randn(1, 3, 8, 8), torch.ones(1, 3, 8, 8))
    assert hook_counts() == hooks_before
    assert "forward" not in net.bn.__dict__ and "forward" not in net.block[1].__dict__
    assert not net.training and not net.stem.weight.requires_grad and net.stem.bias.requires_grad
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_register_rule_and_per_model_rules():
    class UsesErfc(nn.Module):
        def forward(self, x):
            return torch.special.erfc(x)

    x = torch.randn(2, 3)
    with pytest.raises(UnsupportedOperationError):
        ContextualDecomposition(UsesErfc()).decompose(x, torch.ones(1, 3))
    cd = ContextualDecomposition(UsesErfc(), rules={torch.special.erfc: captum_cd.rules.shapley_activation})
    assert_complete(UsesErfc(), x, torch.ones(1, 3), rules={torch.special.erfc: captum_cd.rules.shapley_activation})
    try:
        captum_cd.register_rule(torch.special.erfc, captum_cd.rules.shapley_activation)
        rel_global, _ = ContextualDecomposition(UsesErfc()).decompose(x, torch.ones(1, 3))
        rel_local, _ = cd.decompose(x, torch.ones(1, 3))
        torch.testing.assert_close(rel_global, rel_local)
    finally:
        RULES.pop(torch.special.erfc)


def test_module_scoped_rule_changes_only_that_module():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    x, mask = torch.randn(2, 3), torch.tensor([[1.0, 0.0, 1.0]])
    plain, _ = ContextualDecomposition(net).decompose(x, mask)
    # The ReLU form for the second tanh only: beta' = tanh(beta) there.
    scoped, irrel = ContextualDecomposition(net, module_rules={"3": {torch.tanh: captum_cd.rules.relu_form}}).decompose(x, mask)
    torch.testing.assert_close(scoped + irrel, net(x).expand_as(scoped))
    assert not torch.allclose(plain, scoped)
    with torch.no_grad():
        h = ContextualDecomposition(net[:3]).decompose(x, mask)[0][0]
        expected = net[4](torch.tanh(h)) - net[4].bias * 0  # bias split below
    # Hand check of the ReLU form on the last block: relevant = W tanh(h_rel) + bias share.
    u = torch.tanh(h) @ net[4].weight.t()
    v = net(x) - net[4].bias - u
    b = net[4].bias
    expected = u + b * u.abs() / (u.abs() + v.abs())
    torch.testing.assert_close(scoped[0], expected)


def test_module_replacement_rule():
    class Custom(nn.Module):
        def forward(self, x):
            return torch.cumprod(x, 1)  # no rule: the replacement must take over

    def as_identity(module, x):
        return x

    net = nn.Sequential(nn.Linear(3, 3), Custom(), nn.Linear(3, 2))
    x = torch.randn(2, 3)
    rel, irrel = ContextualDecomposition(net, module_rules={Custom: as_identity}).decompose(x, torch.ones(1, 3))
    expected = net[2](net[0](x))
    torch.testing.assert_close(rel + irrel, expected.expand_as(rel))


def test_layer_starts_the_decomposition_at_a_module_output():
    class TextModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 6)
            self.fc = nn.Linear(6, 2)

        def forward(self, tokens):
            return self.fc(torch.tanh(self.embed(tokens)).mean(1))

    net = TextModel()
    tokens = torch.randint(0, 20, (3, 5))
    masks = torch.zeros(2, 5, 1)
    masks[0, :2], masks[1, 2:] = 1, 1
    cd = ContextualDecomposition(net, layer=net.embed)
    rel, irrel = cd.decompose(tokens, masks)
    torch.testing.assert_close(rel + irrel, net(tokens).expand_as(rel))
    with pytest.raises(TypeError, match="layer="):
        ContextualDecomposition(net).decompose(tokens, masks)
    assert not net.embed._forward_hooks


def test_gradients_flow_and_no_grad_keeps_nothing():
    net = Functional().eval()
    x = torch.randn(1, 3, 16, 16)
    rel, _ = ContextualDecomposition(net).decompose(x, torch.ones(1, 1, 16, 16))
    rel.sum().backward()
    assert net.conv1.weight.grad is not None and net.conv1.weight.grad.abs().sum() > 0
    with torch.no_grad():
        rel, irrel = ContextualDecomposition(net).decompose(x, torch.ones(1, 1, 16, 16))
    assert rel.grad_fn is None and irrel.grad_fn is None


def test_gradcheck_through_decompose_float64():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Tanh(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(12, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    x = torch.randn(2, 1, 14, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(1, 1, 14) > 0.5).double()
    cd = ContextualDecomposition(net)
    assert torch.autograd.gradcheck(lambda inp: cd.decompose(inp, mask)[0], (x,))

    def of_weight(w):  # CD of a plain function works too
        model = lambda inp: torch.func.functional_call(net, {"0.weight": w}, (inp,))  # noqa: E731
        return ContextualDecomposition(model).decompose(x.detach(), mask)[0]

    assert torch.autograd.gradcheck(of_weight, (net[0].weight.detach().clone().requires_grad_(),))


def test_float64_and_device_follow_the_inputs():
    net = Functional().double().eval()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    rel, irrel = ContextualDecomposition(net).decompose(x, torch.ones(1, 1, 16, 16, dtype=torch.float64))
    assert rel.dtype == torch.float64 and rel.device == x.device
    torch.testing.assert_close(rel + irrel, net(x).expand_as(rel), atol=1e-12, rtol=1e-12)


def test_layer_works_for_an_intermediate_feature_map():
    net = Functional().eval()
    x = torch.randn(2, 3, 16, 16)
    cd = ContextualDecomposition(net, layer=net.conv1)
    masks = torch.zeros(2, 8, 16, 16)  # conv1's output: (8 channels, 16, 16)
    masks[0, :4], masks[1, :, :8] = 1, 1  # half of the channels; the top half of the map
    rel, irrel = cd.decompose(x, masks)
    torch.testing.assert_close(rel + irrel, net(x).expand_as(rel), atol=1e-5, rtol=1e-5)
    everything, _ = cd.decompose(x, torch.ones(1, 8, 16, 16))
    nothing, _ = cd.decompose(x, torch.zeros(1, 8, 16, 16))
    assert nothing.abs().max() < 1e-6 and not torch.allclose(everything, nothing)
    scores = cd.attribute(x, target=0, feature_mask=torch.arange(8).view(1, 8, 1, 1))  # per channel
    assert scores.shape == (2, 8, 16, 16)
