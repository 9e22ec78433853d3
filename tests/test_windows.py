"""Spatial windows (captum_cd/attr/windows.py): local groups propagated in boxes give the
values of the dense propagation, and the boxes are really used."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_cd import ContextualDecomposition, grid_ids
from captum_cd.attr.decomposition import Decomposition
from captum_cd.attr.rules import relu_form
from captum_cd.attr.windows import slide, spatial_windows, Window


class Block(nn.Module):
    """A ResNet basic block: conv-BN-ReLU-conv-BN, a strided 1x1 shortcut, in-place ReLU."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.down(x))


class Recorder(nn.Module):
    """Identity that records whether its input arrives windowed."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        if isinstance(x, Decomposition):
            self.seen.append(x.window)
        return x


def resnet_like():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 7, 2, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
        Recorder(), Block(8, 8, 1), Block(8, 16, 2), Recorder(),
        nn.Conv2d(16, 16, 3, 1, padding=2, dilation=2, groups=4), nn.GELU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
    for module in net.modules():  # running statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_(1, 0.3)
            module.bias.data.normal_(0, 0.3)
    return net.double().eval()


def both(model, x, ids, **kwargs):
    cd = ContextualDecomposition(model)
    windowed = cd.attribute(x, feature_mask=ids, **kwargs)
    with spatial_windows(False):
        dense = cd.attribute(x, feature_mask=ids, **kwargs)
    return windowed, dense


@pytest.mark.parametrize("side,block", [(64, 8), (64, 16), (45, 7), (52, 13)])
def test_windows_give_the_dense_values(side, block):
    net = resnet_like()
    x = torch.randn(2, 3, side, side + 3, dtype=torch.float64)
    ids = grid_ids(side, side + 3, block)
    windowed, dense = both(net, x, ids, target=torch.tensor([1, 3]))
    assert dense.abs().max() > 1e-3
    torch.testing.assert_close(windowed, dense, rtol=0, atol=1e-12 * dense.abs().max().item())
    assert any(w is not None for w in net[4].seen)  # the first blocks ran in windows


def test_boxes_grow_with_the_receptive_field_and_go_dense():
    net = resnet_like()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    ContextualDecomposition(net).attribute(x, target=0, feature_mask=grid_ids(64, 64, 8))
    early, late = net[4].seen[-1], net[7].seen[-1]
    assert early is not None and early.size[0] < early.map_size[0]
    # after the stride-2 block the boxes of 8x8 blocks of a 64x64 image are still local
    assert late is None or late.share > early.share


def test_zero_backgrounds_stay_windowed_and_exact():
    """Where the whole input is 0 a conv's bias meets two zero parts and goes to the
    irrelevant part: a digit on a zero background runs in windows with the dense values,
    and a blank corner block scores exactly 0."""
    torch.manual_seed(1)
    recorder = Recorder()
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), recorder, nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 16 * 16, 3),
    ).double().eval()
    x = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    x[..., 8:24, 8:24] = torch.rand(16, 16, dtype=torch.float64) + 0.5  # a digit on a zero background
    windowed, dense = both(net, x, grid_ids(32, 32, 2), target=0)
    assert recorder.seen[0] is not None
    torch.testing.assert_close(windowed, dense, rtol=0, atol=1e-12)
    assert dense[0, 0, 0, 0] == 0 and windowed[0, 0, 0, 0] == 0


def test_steps_with_a_map_constant():
    """A constant that varies over the map is cut to the boxes (a product) or the value
    goes dense (a quotient binds it into its step)."""

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, padding=1)
            self.register_buffer("scale", torch.rand(1, 1, 40, 40) + 0.5)
            self.head = nn.Linear(3 * 40 * 40, 2)
            self.recorder = Recorder()

        def forward(self, x):
            h = self.recorder(torch.relu(self.conv(x) * self.scale))
            h = torch.relu(self.conv(h[:, :2] / self.scale))
            return self.head(h.flatten(1))

    torch.manual_seed(2)
    net = Scaled().double().eval()
    x = torch.randn(2, 2, 40, 40, dtype=torch.float64)
    windowed, dense = both(net, x, grid_ids(40, 40, 5), target=1)
    assert net.recorder.seen[0] is not None
    torch.testing.assert_close(windowed, dense, rtol=0, atol=1e-12 * dense.abs().max().item())


class Steps(nn.Module):
    """Every kind of elementwise step a windowed value keeps pending, between two convs."""

    def __init__(self, relu_like=torch.relu):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)
        self.prelu, self.recorder, self.head = nn.PReLU(4), Recorder(), nn.Linear(3 * 48 * 48, 2)
        self.relu_like = relu_like

    def forward(self, x):
        h = torch.sigmoid(self.conv1(x)) * 2 / 3  # the Shapley form, scaling
        h = F.leaky_relu(-h + 0.5, 0.1) - 0.25  # negation, added constants (bias splits), the ReLU form
        h = torch.clamp(self.prelu(h), -1, 2).clamp(0.1, 2)  # PReLU, clamps with and without 0 in range
        h = self.recorder(self.relu_like(F.hardtanh(torch.exp(h))))  # guarded Shapley form
        return self.head(self.conv2(h).flatten(1))


def test_every_elementwise_step_keeps_the_zeros_outside_the_boxes():
    """Outside its box a group's part is exactly 0, so every step a windowed value runs on
    its boxes alone must map a part that is 0 to 0: on an input that is nowhere 0, the
    windowed values equal the dense ones, where every step also meets those zeros."""
    torch.manual_seed(4)
    net = Steps().double().eval()
    x = torch.randn(2, 2, 48, 48, dtype=torch.float64)
    windowed, dense = both(net, x, grid_ids(48, 48, 8), target=1)
    assert net.recorder.seen[0] is not None
    assert dense.abs().max() > 1e-3
    torch.testing.assert_close(windowed, dense, rtol=0, atol=1e-12 * dense.abs().max().item())


def test_a_users_relu_form_with_f0_not_zero_goes_dense():
    """The ReLU form registered by a user for sigmoid (f(0) = 0.5) gives every group 0.5
    outside its box: the value goes dense, with the dense values."""
    torch.manual_seed(5)
    net = Steps(relu_like=torch.sigmoid).double().eval()
    x = torch.randn(1, 2, 48, 48, dtype=torch.float64)
    cd = ContextualDecomposition(net, rules={torch.sigmoid: relu_form})
    windowed = cd.attribute(x, target=0, feature_mask=grid_ids(48, 48, 8))
    with spatial_windows(False):
        dense = cd.attribute(x, target=0, feature_mask=grid_ids(48, 48, 8))
    torch.testing.assert_close(windowed, dense, rtol=0, atol=1e-12 * dense.abs().max().item())


def test_gradients_through_windows_match_dense():
    net = resnet_like()
    x = torch.randn(1, 3, 48, 48, dtype=torch.float64)
    masks = grid_ids(48, 48, 8).flatten()
    masks = torch.stack([(masks == g).view(1, 1, 48, 48).double() for g in range(36)])
    cd = ContextualDecomposition(net)

    def grads(enabled):
        net.zero_grad()
        with spatial_windows(enabled):
            rel, _ = cd.decompose(x, masks=masks.expand(36, 1, 3, 48, 48))
            rel[:, 0, 2].pow(2).sum().backward()
        # Biases are left out: where both parts are ~0 the bias split's gradient is the
        # cancellation of ~1e20-sized terms, off from finite differences in the dense and
        # the windowed propagation alike; weights are compared.
        return [p.grad.clone() for name, p in net.named_parameters() if p.grad is not None and "bias" not in name]

    windowed = grads(True)
    assert any(w is not None for w in net[4].seen)
    for a, b in zip(windowed, grads(False)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k,s,p,d", [(3, 1, 1, 1), (7, 2, 3, 1), (1, 2, 0, 1), (3, 2, 1, 2), (2, 2, 0, 1), (5, 3, 4, 1)])
def test_slide_covers_every_output_a_box_reaches(k, s, p, d):
    """Against brute force: convolve each group's indicator and find where it is non-zero."""
    torch.manual_seed(3)
    height, width = 23, 17
    tops, lefts = torch.tensor([0, 5, 17, 9]), torch.tensor([0, 11, 3, 14])
    window = Window(tops, lefts, (6, 3), (height, width))
    out_h = (height + 2 * p - d * (k - 1) - 1) // s + 1
    out_w = (width + 2 * p - d * (k - 1) - 1) // s + 1
    out_window, _ = slide(window, (k, k), (s, s), (p, p), (d, d), (out_h, out_w))
    for g in range(4):
        box = torch.zeros(1, 1, height, width)
        box[..., tops[g] : tops[g] + 6, lefts[g] : lefts[g] + 3] = 1
        reach = F.conv2d(box, torch.ones(1, 1, k, k), stride=s, padding=p, dilation=d)[0, 0] > 0
        inside = torch.zeros_like(reach)
        t, l = out_window.tops[g], out_window.lefts[g]
        inside[t : t + out_window.size[0], l : l + out_window.size[1]] = True
        assert reach.shape == (out_h, out_w)
        assert not (reach & ~inside).any()
        assert 0 <= t and t + out_window.size[0] <= out_h


def test_non_local_groups_stay_dense():
    net = resnet_like()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    stripes = (torch.arange(32) % 2).view(1, 32).expand(32, 32)  # two groups spread over the map
    ContextualDecomposition(net).attribute(x, target=0, feature_mask=stripes)
    assert net[4].seen[-1] is None


@pytest.mark.parametrize("ids", [
    torch.zeros(64, 64, dtype=torch.long).index_fill_(1, torch.arange(32, 64), 1),  # 2 groups: too few
    grid_ids(64, 64, 32),  # 4 blocks of 32x32: grown boxes over half the map
])  # fmt: skip
def test_windows_only_where_they_pay(ids):
    net = resnet_like()
    ContextualDecomposition(net).attribute(torch.randn(1, 3, 64, 64, dtype=torch.float64), target=0, feature_mask=ids)
    assert net[4].seen == [None]
