"""timm's models (random weights, float64, small images and depths) decompose as they
are: complete, group scores on the scale of the output, the model unchanged."""

import pytest
import torch

from _zoo import assert_complete_and_on_scale, assert_float32_agrees, assert_unchanged, calibrate_batch_norm, DT, randomise_zero_weights, snapshot
from captum_cd import ContextualDecomposition

timm = pytest.importorskip("timm")  # in the test extra; optional for users

# name: (timm model, image size, constructor arguments that keep it small)
MODELS = {
    "resnet18": ("resnet18", 32, {}),
    "efficientnet_b0 (SE gates)": ("efficientnet_b0", 32, {}),
    "mobilenetv3_small_050 (SE gates)": ("mobilenetv3_small_050", 32, {}),
    "mobilenetv4_conv_small": ("mobilenetv4_conv_small", 32, {}),
    "ghostnet_100 (SE gates)": ("ghostnet_100", 32, {}),
    "convnext_atto": ("convnext_atto", 32, {}),
    "vit_tiny (2 blocks)": ("vit_tiny_patch16_224", 32, dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=4)),
    "deit_tiny (2 blocks)": ("deit_tiny_patch16_224", 32, dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=4)),
    "eva02_tiny (rotary, SwiGLU, 2 blocks)": ("eva02_tiny_patch14_224", 28, dict(img_size=28, depth=2)),
    "swin_tiny (2 stages)": (
        "swin_tiny_patch4_window7_224", 32, dict(img_size=32, window_size=4, depths=(1, 1), num_heads=(2, 4), embed_dim=32)
    ),
    "xcit_nano (F.normalize, 2 blocks)": ("xcit_nano_12_p16_224", 32, dict(img_size=32, patch_size=8, depth=2)),
    "edgenext_xx_small (F.normalize)": ("edgenext_xx_small", 64, {}),
    "levit_128s (view_as, reshape_as)": ("levit_128s", 64, dict(img_size=64)),
    "mobilevit_xxs": ("mobilevit_xxs", 64, {}),
    "metaformer / poolformer (StarReLU, 1 block a stage)": ("MetaFormer", 32, dict(depths=(1, 1, 1, 1), dims=(16, 32, 48, 64))),
    "mlp-mixer (2 blocks)": ("MlpMixer", 32, dict(img_size=32, patch_size=8, num_blocks=2, embed_dim=64)),
    "resmlp (addcmul affine, 2 blocks)": ("ResMLP", 32, dict(img_size=32, patch_size=8, num_blocks=2, embed_dim=64)),
}
CLASSES = {"MetaFormer": "timm.models.metaformer", "MlpMixer": "timm.models.mlp_mixer"}


def _create(arch, **kwargs):
    if arch == "ResMLP":  # resmlp_12_224's blocks at a small size
        mixer = pytest.importorskip("timm.models.mlp_mixer")
        return mixer.MlpMixer(block_layer=mixer.ResBlock, norm_layer=mixer.Affine, mlp_ratio=4, **kwargs)
    if arch in CLASSES:  # their registered names fix the depth
        return getattr(pytest.importorskip(CLASSES[arch]), arch)(**kwargs)
    return timm.create_model(arch, pretrained=False, **kwargs)


@pytest.mark.parametrize("name", MODELS)
def test_timm_model_is_complete_and_on_scale(name, one_thread):
    arch, size, kwargs = MODELS[name]
    torch.manual_seed(0)
    model = randomise_zero_weights(_create(arch, num_classes=5, **kwargs).to(DT))
    x = torch.randn(32, 3, size, size, dtype=DT)  # BatchNorm statistics from 32 images
    calibrate_batch_norm(model, x)
    top = (torch.arange(size)[:, None] < size // 2).expand(size, size)
    masks = torch.stack([top, ~top]).to(DT)[:, None]  # top and bottom halves, (2, 1, H, W)
    before = snapshot(model)
    rel, irr = ContextualDecomposition(model).decompose(x[:2], masks)
    assert_unchanged(model, before)
    with torch.no_grad():
        out = model(x[:2])
    assert_complete_and_on_scale(rel, irr, out)
    x32 = x[:2].float()
    assert_float32_agrees(model, rel, out, lambda m: (ContextualDecomposition(m).decompose(x32, masks.float())[0], m(x32)))
