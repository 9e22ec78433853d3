"""torchvision's classification models (random weights, float64, 32x32 images) decompose
as they are: complete, group scores on the scale of the output, the model unchanged.

torchvision from PyPI is a CUDA build whose compiled operators do not load beside the
CPU torch; ``captum_cd.compat`` (called in conftest) makes it importable, and the
model definitions are plain Python."""

import pytest
import torch

from _zoo import (
    assert_complete_and_on_scale,
    assert_float32_agrees,
    assert_unchanged,
    calibrate_batch_norm,
    DT,
    OLD_PRODUCT_RULES,
    randomise_zero_weights,
    snapshot,
)
from captum_cd import ContextualDecomposition, grid_ids
from captum_cd.attr.masks import ids_to_masks

models = pytest.importorskip("torchvision.models")  # in the test extra; optional for users

SIZE = 32
MODELS = {
    "resnet18": lambda: models.resnet18(num_classes=5),
    "mobilenet_v2": lambda: models.mobilenet_v2(num_classes=5),
    "mobilenet_v3_small (SE gates, hardswish)": lambda: models.mobilenet_v3_small(num_classes=5),
    "efficientnet_b0 (SE gates, SiLU)": lambda: models.efficientnet_b0(num_classes=5),
    "regnet_y_400mf (SE gates)": lambda: models.regnet_y_400mf(num_classes=5),
    "densenet121": lambda: models.densenet121(num_classes=5),
    "squeezenet1_1": lambda: models.squeezenet1_1(num_classes=5),
    "shufflenet_v2_x0_5": lambda: models.shufflenet_v2_x0_5(num_classes=5),
    "convnext_tiny": lambda: models.convnext_tiny(num_classes=5),
    "vit (2 layers, width 64)": lambda: models.VisionTransformer(
        image_size=SIZE, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=5
    ),
    "swin_t": lambda: models.swin_t(num_classes=5),
}


def _halves():
    return ids_to_masks(grid_ids(SIZE, SIZE, SIZE // 2) // 2).to(DT)  # top, bottom: (2, 1, H, W)


def _decompose(model, x, **kwargs):
    before = snapshot(model)
    rel, irr = ContextualDecomposition(model, **kwargs).decompose(x, _halves())
    assert_unchanged(model, before)
    with torch.no_grad():
        out = model(x)
    return rel, irr, out


@pytest.mark.parametrize("name", MODELS)
def test_torchvision_model_is_complete_and_on_scale(name, one_thread):
    torch.manual_seed(0)
    model = randomise_zero_weights(MODELS[name]().to(DT))
    x = torch.randn(32, 3, SIZE, SIZE, dtype=DT)  # BatchNorm statistics from 32 images
    calibrate_batch_norm(model, x)
    rel, irr, out = _decompose(model, x[:2])
    assert_complete_and_on_scale(rel, irr, out)
    x32 = x[:2].float()
    assert_float32_agrees(model, rel, out, lambda m: (ContextualDecomposition(m).decompose(x32, _halves().float())[0], m(x32)))


def test_squeeze_and_excitation_gates_no_longer_erase_relevance(one_thread):
    """Keeping only ``beta_a * beta_b`` at every gate leaves almost nothing relevant after a
    few squeeze-and-excitation blocks; the gate as a statistic keeps the scale."""
    torch.manual_seed(0)
    model = models.efficientnet_b0(num_classes=5).to(DT)
    x = torch.randn(32, 3, SIZE, SIZE, dtype=DT)  # BatchNorm statistics from 32 images
    calibrate_batch_norm(model, x)
    rel, irr, out = _decompose(model, x[:2])
    old, old_irr, _ = _decompose(model, x[:2], rules=OLD_PRODUCT_RULES)
    torch.testing.assert_close(old + old_irr, out.expand_as(old), rtol=0, atol=1e-10)  # complete all the same
    assert rel.abs().max() > 0.05 * out.abs().max()
    assert old.abs().max() < 1e-12 * out.abs().max()


WINDOWED = {
    "mobilenet_v2 (depthwise convs, ReLU6)": lambda: models.mobilenet_v2(num_classes=5, width_mult=0.25),
    "ResNeXt (grouped convs, bottlenecks)": lambda: models.resnet.ResNet(
        models.resnet.Bottleneck, [1, 1, 1, 1], num_classes=5, groups=4, width_per_group=8
    ),
}


@pytest.mark.parametrize("name", list(WINDOWED))
def test_windows_give_the_dense_values(name):
    """A 6x6 grid of 8-px blocks runs in spatial windows; the scores equal the dense ones."""
    from captum_cd.attr.decomposition import Decomposition
    from captum_cd.attr.windows import spatial_windows

    torch.manual_seed(0)
    model = calibrate_batch_norm(WINDOWED[name]().to(DT), torch.randn(8, 3, 48, 48, dtype=DT))
    x = torch.randn(1, 3, 48, 48, dtype=DT)
    cd = ContextualDecomposition(model)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, out: seen.append(isinstance(out, Decomposition) and out.window is not None)) for m in model.modules()]
    with torch.no_grad():
        windowed = cd.attribute(x, target=1, feature_mask=grid_ids(48, 48, 8))
        for hook in hooks:
            hook.remove()
        assert sum(seen) >= 5  # the early layers ran in windows
        with spatial_windows(False):
            dense = cd.attribute(x, target=1, feature_mask=grid_ids(48, 48, 8))
    # Rounding differs (each box's region is convolved apart from the map), and the
    # decomposition of these calibrated random nets amplifies it: MobileNetV2's dense scores
    # move by 2e-9 of their scale when the input moves by 1e-16; windows move them by 7e-12.
    torch.testing.assert_close(windowed, dense, rtol=0, atol=1e-8 * dense.abs().max().item())
