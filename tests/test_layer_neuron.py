"""LayerContextualDecomposition and NeuronContextualDecomposition: Captum's layer and neuron families."""

import pytest
import torch
from captum.attr import LayerAttribution, LayerFeatureAblation, NeuronAttribution
from torch import nn

from captum_cd import ContextualDecomposition, LayerContextualDecomposition, NeuronContextualDecomposition


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()


def cnn():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)
    ).eval()  # fmt: skip


def split_bias(own, rest, bias):
    """The affine rule written out: the bias goes to each part in proportion to |W part|
    (none of it to the relevant part when both are 0)."""
    total = own.abs() + rest.abs()
    return bias * torch.where(total > 0, own.abs() / total.clamp_min(1e-30), torch.zeros_like(total))


def test_families_and_metadata():
    model = mlp()
    lcd, ncd = LayerContextualDecomposition(model, model[1]), NeuronContextualDecomposition(model, model[1])
    assert isinstance(lcd, LayerAttribution) and isinstance(ncd, NeuronAttribution)
    assert lcd.has_convergence_delta() and ncd.has_convergence_delta()
    assert lcd.get_name() == "Layer Contextual Decomposition"


def test_layer_units_by_hand():
    # Each hidden unit i of the ReLU output h: relevant at the output is
    # W2[k, i] h_i plus its share of b2[k].
    model = mlp()
    x = torch.randn(5, 3)
    h = model[1](model[0](x))
    w, b = model[2].weight, model[2].bias
    k = 1
    own = h * w[k]  # (B, 4)
    expected = own + split_bias(own, (h @ w[k])[:, None] - own, b[k])
    attr = LayerContextualDecomposition(model, model[1]).attribute(x, target=k)
    torch.testing.assert_close(attr, expected.detach())
    # The input of the ReLU is the output of the first Linear, and relu(z_i) = h_i.
    at_input = LayerContextualDecomposition(model, model[1]).attribute(x, target=k, attribute_to_layer_input=True)
    torch.testing.assert_close(at_input, expected.detach())


def test_layer_equals_cd_of_the_model_after_the_layer():
    model, x = cnn(), torch.randn(2, 1, 8, 8)
    pooled = model[:3](x)
    ids = torch.arange(3).view(1, 3, 1, 1)  # one group a channel
    attr = LayerContextualDecomposition(model, model[2]).attribute(x, target=4, layer_mask=ids)
    expected = ContextualDecomposition(model[3:]).attribute(pooled, target=4, feature_mask=ids)
    torch.testing.assert_close(attr, expected)
    # Captum's order: inputs, layer_baselines, target, additional_forward_args, layer_mask
    torch.testing.assert_close(LayerContextualDecomposition(model, model[2]).attribute(x, None, 4, None, ids), attr)


def test_a_list_of_layers_gives_a_list():
    model, x = cnn(), torch.randn(2, 1, 8, 8)
    lcd = LayerContextualDecomposition(model, [model[1], model[2]])
    attrs, deltas = lcd.attribute(x, target=0, layer_mask=[None, torch.arange(3).view(1, 3, 1, 1)], return_convergence_delta=True)
    assert isinstance(attrs, list) and len(attrs) == 2 and len(deltas) == 2
    torch.testing.assert_close(attrs[0], LayerContextualDecomposition(model, model[1]).attribute(x, target=0))
    assert attrs[0].shape == (2, 3, 8, 8) and attrs[1].shape == (2, 3, 4, 4)
    assert max(d.abs().max() for d in deltas) < 1e-5
    with pytest.raises(ValueError, match="list of 2 masks"):
        lcd.attribute(x, target=0, layer_mask=torch.zeros(1, 3, 1, 1, dtype=torch.long))


def test_layer_mask_groups_like_layer_feature_ablation_on_a_linear_tail():
    # After the layer the model is linear without bias: CD of a group of units = its ablation effect.
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2, bias=False)).eval()
    x = torch.randn(3, 4)
    mask = torch.tensor([[0, 0, 1, 1, 2, 2]])
    cd = LayerContextualDecomposition(model, model[1]).attribute(x, target=0, layer_mask=mask)
    fa = LayerFeatureAblation(model, model[1]).attribute(x, target=0, layer_mask=mask)
    torch.testing.assert_close(cd, fa)


def test_layer_refuses_baselines():
    model = mlp()
    with pytest.raises(ValueError, match="takes no baselines"):
        LayerContextualDecomposition(model, model[1]).attribute(torch.randn(2, 3), torch.zeros(2, 4))


def test_neuron_by_hand():
    # Unit j of the ReLU output: relu(W1[j, i] x_i + share of b1[j]) for input feature i.
    model = mlp()
    x = torch.randn(5, 3)
    w, b = model[0].weight, model[0].bias
    j = 2
    own = x * w[j]
    expected = torch.relu(own + split_bias(own, (x @ w[j])[:, None] - own, b[j]))
    attr, delta = NeuronContextualDecomposition(model, model[1]).attribute(x, j, return_convergence_delta=True)
    torch.testing.assert_close(attr, expected.detach())
    assert delta.abs().max() < 1e-6


def test_neuron_equals_cd_of_the_truncated_model():
    model, x = cnn(), torch.randn(2, 1, 8, 8)
    ncd = NeuronContextualDecomposition(model, model[1])
    ids = torch.arange(16).view(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)[None, None]
    unit = ncd.attribute(x, (2, 3, 5), feature_mask=ids)
    torch.testing.assert_close(unit, ContextualDecomposition(lambda v: model[:2](v)[:, 2, 3, 5]).attribute(x, feature_mask=ids))
    channel = ncd.attribute(x, (1, slice(None), slice(None)), None, None, ids)  # Captum's order
    torch.testing.assert_close(channel, ContextualDecomposition(lambda v: model[:2](v)[:, 1].sum((1, 2))).attribute(x, feature_mask=ids))
    by_function = ncd.attribute(x, lambda out: out[:, 1].sum((1, 2)), feature_mask=ids)
    torch.testing.assert_close(by_function, channel)
    at_input = NeuronContextualDecomposition(model, model[2]).attribute(x, (2, 3, 5), feature_mask=ids, attribute_to_neuron_input=True)
    torch.testing.assert_close(at_input, unit)


def test_neuron_head_of_a_token_model_from_its_embedding():
    torch.manual_seed(2)

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.proj, self.out = nn.Embedding(20, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, ids):
            return self.out(torch.tanh(self.proj(self.embed(ids))).mean(1))

    model = Tokens().eval()
    ids = torch.randint(0, 20, (3, 5))
    head = (4, slice(2, 4))  # token 4, features 2-3 of the projection: one "head" of width 2
    tokens = torch.arange(5).view(1, 5, 1)
    attr = NeuronContextualDecomposition(model, model.proj, start_layer=model.embed).attribute(ids, head, feature_mask=tokens)
    expected = ContextualDecomposition(lambda i: model.proj(model.embed(i))[:, 4, 2:4].sum(-1), layer=model.embed).attribute(ids, feature_mask=tokens)
    torch.testing.assert_close(attr, expected)
    assert attr.shape == (3, 5, 8)
    assert attr[:, :4].abs().max() < 1e-12  # only token 4 reaches the unit (the bias rule's epsilon aside)


def test_neuron_leaves_the_model_alone_and_stops_at_the_layer():
    model = mlp()
    calls = []
    model[2].register_forward_hook(lambda *a: calls.append(1))
    hooks_before = len(model[1]._forward_hooks), len(model[1]._forward_pre_hooks)
    NeuronContextualDecomposition(model, model[1]).attribute(torch.randn(2, 3), 0)
    assert calls == []  # nothing after the layer ran
    assert (len(model[1]._forward_hooks), len(model[1]._forward_pre_hooks)) == hooks_before
    assert not model.training
    with pytest.raises(ValueError, match="did not run"):
        NeuronContextualDecomposition(model, nn.ReLU()).attribute(torch.randn(2, 3), 0)


def test_a_layer_input_that_cannot_be_decomposed_is_named():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.fc = nn.Embedding(10, 4), nn.Linear(4, 2)

        def forward(self, ids):
            return self.fc(self.embed(ids).mean(1))

    net, ids = Tokens().eval(), torch.randint(0, 10, (2, 5))
    lcd = LayerContextualDecomposition(net, net.embed)
    with pytest.raises(RuntimeError, match="positional input 0 is a torch.int64 tensor"):
        lcd.attribute(ids, target=0, attribute_to_layer_input=True)
    assert lcd.attribute(ids, target=0).shape == (2, 5, 4)  # its output can
    assert not net.embed._forward_hooks and not net.embed._forward_pre_hooks
